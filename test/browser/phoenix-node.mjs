// phoenix.js (the npm package) under Node with the ws package, driven by
// node/phoenix_js_test.go: it prints one JSON line per event and reads
// commands, one JSON line each, from stdin.
//
//   node phoenix-node.mjs <ws://host/pubsub> <token> <user>
// (phoenix.js appends /websocket to the endpoint.)
import { Socket } from "phoenix"
import WebSocket from "ws"
import readline from "node:readline"

const [url, token, user] = process.argv.slice(2)
const say = (o) => process.stdout.write(JSON.stringify(o) + "\n")

const socket = new Socket(url, {
  transport: WebSocket,
  params: { token },
  heartbeatIntervalMs: 300,
  reconnectAfterMs: () => 200,
  rejoinAfterMs: () => 200,
})
socket.onOpen(() => say({ event: "open" }))
socket.onClose((e) => say({ event: "close", code: e && e.code }))
socket.onMessage((m) => {
  if (m.topic === "phoenix" && m.event === "phx_reply" && m.payload.status === "ok") {
    say({ event: "heartbeat" })
  }
})
socket.connect()

const channel = socket.channel(`user:${user}`, {})
channel.on("message", (payload) => say({ event: "message", payload }))
channel.on("score", (payload) => say({ event: "score", payload }))
channel.join()
  .receive("ok", (state) => say({ event: "joined", state }))
  .receive("error", (resp) => say({ event: "join_error", resp }))

readline.createInterface({ input: process.stdin }).on("line", (line) => {
  const cmd = JSON.parse(line)
  switch (cmd.cmd) {
    case "join_other": {
      const other = socket.channel(`user:${cmd.user}`, {})
      other.join()
        .receive("ok", () => say({ event: "joined_other" }))
        .receive("error", (resp) => { say({ event: "refused", reason: resp.reason }); other.leave() })
      break
    }
    case "quit":
      socket.disconnect(() => process.exit(0))
      break
  }
})
