package main

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"math/big"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// The token kinds' runs: the first run's handshake ramp (100 connections,
// a second's pause, then the rest of o.idleConns from every client process
// at once) on a fresh node each, for each kind of token a node takes. The
// tokens are signed before the clock starts (an RSA signature costs the
// client far more than the node's check), which handshakes_per_second does
// not do for its HS256 tokens; the _jwt_hs256 run is that figure measured
// like the others here.
const (
	// keyBase is the Phoenix runs' NOTIFY_PHOENIX_SECRET_KEY_BASE.
	keyBase = "bench-secret-key-base-of-the-elixir-service"
	// jwksKid is the kid of the JWK Set's one key and of the RS256 tokens.
	jwksKid = "bench-rs256"
	// phoenixPath is the Phoenix socket, as phoenix.js 1.x connects to it.
	phoenixPath = "/pubsub/websocket?vsn=2.0.0"
)

// tokenKind is one of tokenRuns's runs.
type tokenKind struct {
	suffix   string  // of the figures' names
	path     string  // "/notify/ws" or phoenixPath
	conn     command // how the clients sign and connect: Token, Secret, Key, Kid, KeyBase, Proto, Topics, QueryToken
	env      []string
	noSecret bool // the node gets no NOTIFY_JWT_SECRET
	jwks     bool // wait until the node has fetched the JWK Set
}

// tokenRuns prints handshakes_per_second<suffix> and
// handshake_server_cpu<suffix> for each token kind: HS256 and RS256 (from
// a JWK Set the harness serves) on /notify/ws, joined to the first run's
// topic; an HS256 JWT and a Phoenix.Token on the Phoenix socket (in
// ?token=), each handshake ending with the phx_reply ok to a phx_join of
// user:<id>.
func tokenRuns(o options, redisAddr string, rdb *redis.Client, clients []*clientProc2) error {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return err
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return err
	}
	js := serveJWKS(&key.PublicKey)
	defer js.Close()
	phx := []string{"NOTIFY_PHOENIX_SECRET_KEY_BASE=" + keyBase}
	topics := []string{"bench"}
	kinds := []tokenKind{
		{suffix: "_jwt_hs256", path: "/notify/ws", conn: command{Secret: secret, Topics: topics}},
		{suffix: "_jwks_rs256", path: "/notify/ws", conn: command{Token: "rs256", Key: der, Kid: jwksKid, Topics: topics},
			env: []string{"NOTIFY_JWKS_URL=" + js.URL + "/jwks.json"}, noSecret: true, jwks: true},
		{suffix: "_phoenix_jwt_hs256", path: phoenixPath, conn: command{Secret: secret, Proto: "phoenix", QueryToken: true}, env: phx},
		{suffix: "_phoenix_token", path: phoenixPath, conn: command{Token: "phoenix", KeyBase: keyBase, Proto: "phoenix", QueryToken: true}, env: phx},
	}
	fmt.Printf("# handshakes by token kind, %d each, on a fresh node each, tokens signed beforehand: "+
		"_jwt_hs256 and _jwks_rs256 on /notify/ws, _phoenix_jwt_hs256 and _phoenix_token on %s up to the phx_join's reply\n",
		o.idleConns-100, phoenixPath)
	for i, k := range kinds {
		hs, err := tokenRun(o, redisAddr, rdb, clients, k, i)
		if err != nil {
			return fmt.Errorf("handshakes%s: %w", k.suffix, err)
		}
		n := float64(hs.count)
		info("%s: %d handshakes in %v, server cpu %.2fs", k.suffix[1:], hs.count, hs.elapsed.Round(time.Millisecond), hs.cpu)
		figure("handshakes_per_second"+k.suffix, n/hs.elapsed.Seconds(), "handshakes/s")
		figure("handshake_server_cpu"+k.suffix, hs.cpu/n*1e6, "us/handshake")
	}
	return nil
}

// tokenRun starts a node for k (the run-th), makes the handshakes and
// closes them again.
func tokenRun(o options, redisAddr string, rdb *redis.Client, clients []*clientProc2, k tokenKind, run int) (handshakes, error) {
	n, err := startNotify(o.notify, redisAddr, nodeOpts{name: "bench-tokens" + strings.ReplaceAll(k.suffix, "_", "-"),
		ip: fmt.Sprintf("127.0.0.%d", 26+run), env: k.env, noSecret: k.noSecret})
	if err != nil {
		return handshakes{}, err
	}
	defer n.stop()
	defer closeAll(clients)
	if k.jwks {
		if err := n.waitMetric("notify_jwks_keys", func(v float64) bool { return v == 1 }, 10*time.Second); err != nil {
			return handshakes{}, err
		}
	}
	cmd := func(i, first, count int) command {
		c := k.conn
		c.Cmd, c.URL, c.First, c.Count, c.Concurrency = "connect", "ws://"+n.addr+k.path, first, count, o.concurrency
		// Source addresses of its own: the earlier runs' closed
		// connections hold ports of theirs in TIME_WAIT.
		c.Src = fmt.Sprintf("127.0.%d.%d", 10+run, 2+i)
		return c
	}
	warm := cmd(0, 0, 100)
	warm.Concurrency = 16
	if err := presign(clients[:1], []command{warm}); err != nil {
		return handshakes{}, err
	}
	if r, err := clients[0].call(warm); err != nil || r.Failed > 0 {
		return handshakes{}, fmt.Errorf("connect 100: %v %+v", err, r)
	}
	time.Sleep(time.Second)
	rest := o.idleConns - 100
	per := rest / len(clients)
	cmds := make([]command, len(clients))
	for i := range clients {
		cmds[i] = cmd(i, 100+i*per, per)
		if i == len(clients)-1 {
			cmds[i].Count = rest - per*(len(clients)-1)
		}
	}
	if err := presign(clients, cmds); err != nil {
		return handshakes{}, err
	}
	hs, err := parallelConnect(n, rdb, clients, cmds)
	hs.count = rest // parallelConnect counts Users, which cmds leave to First and Count
	if err != nil {
		return hs, err
	}
	if got := n.metric("notify_connections"); int(got) != o.idleConns {
		return hs, fmt.Errorf("server has %v connections, want %d", got, o.idleConns)
	}
	return hs, nil
}

// presign has clients[i] sign the tokens of cmds[i] (all at once) and
// marks cmds[i] to connect with them.
func presign(clients []*clientProc2, cmds []command) error {
	errs := make([]error, len(cmds))
	var wg sync.WaitGroup
	for i, c := range clients {
		s := cmds[i]
		s.Cmd = "sign"
		wg.Go(func() { _, errs[i] = c.call(s) })
		cmds[i].Signed = true
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			return fmt.Errorf("client %d: signing: %w", i, err)
		}
	}
	return nil
}

// closeAll has every client process close its connections.
func closeAll(clients []*clientProc2) {
	for _, c := range clients {
		if _, err := c.call(command{Cmd: "close"}); err != nil {
			info("close: %v", err)
		}
	}
}

// serveJWKS serves a JWK Set of pub (kid jwksKid, RS256) on loopback.
func serveJWKS(pub *rsa.PublicKey) *httptest.Server {
	b64 := base64.RawURLEncoding.EncodeToString
	doc, _ := json.Marshal(map[string]any{"keys": []map[string]string{{
		"kty": "RSA", "kid": jwksKid, "alg": "RS256", "use": "sig",
		"n": b64(pub.N.Bytes()), "e": b64(big.NewInt(int64(pub.E)).Bytes()),
	}}})
	return httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(doc)
	}))
}
