// Package respond writes the JSON responses of the node's HTTP endpoints:
// the contract's error body {"error":{"message":...}} and plain JSON values.
package respond

import (
	"encoding/json"
	"net/http"
)

// JSON writes v with status, never cached.
func JSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		status, b = http.StatusInternalServerError, []byte(`{"error":{"message":"internal error"}}`)
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_, _ = w.Write(append(b, '\n'))
}

// Error writes {"error":{"message":msg}} with status.
func Error(w http.ResponseWriter, status int, msg string) {
	var body struct {
		Error struct {
			Message string `json:"message"`
		} `json:"error"`
	}
	body.Error.Message = msg
	JSON(w, status, body)
}

// Quote is s as a JSON string, for messages that name client input.
func Quote(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}
