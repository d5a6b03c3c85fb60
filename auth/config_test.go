package auth

import (
	"flag"
	"io"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/notify-dev/notify/internal/flagext"
)

func TestRegisterFlags(t *testing.T) {
	tests := []struct {
		name string
		args []string
		want Config
	}{
		{name: "defaults", want: Config{UserClaim: "user_id", JWKSRefresh: 5 * time.Minute}},
		{
			name: "all set",
			args: []string{
				"--notify-jwt-secret=s3cret",
				"--notify-jwt-public-keys=a.pem, b.pem",
				"--notify-jwt-audience=notify",
				"--notify-jwt-issuer=https://issuer.example",
				"--notify-user-claim=sub",
				"--notify-session-cookie=session",
				"--notify-jwks-url=https://a.example/jwks.json,https://b.example/keys",
				"--notify-jwks-refresh=90s",
			},
			want: Config{
				Secret:         "s3cret",
				PublicKeyFiles: flagext.StringSlice{"a.pem", "b.pem"},
				Audience:       "notify",
				Issuer:         "https://issuer.example",
				UserClaim:      "sub",
				SessionCookie:  "session",
				JWKSURLs:       flagext.StringSlice{"https://a.example/jwks.json", "https://b.example/keys"},
				JWKSRefresh:    90 * time.Second,
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fs := flag.NewFlagSet("test", flag.ContinueOnError)
			fs.SetOutput(io.Discard)
			var c Config
			c.RegisterFlags(fs)
			if err := fs.Parse(tt.args); err != nil {
				t.Fatalf("Parse: %v", err)
			}
			if !reflect.DeepEqual(c, tt.want) {
				t.Fatalf("Config = %+v, want %+v", c, tt.want)
			}
		})
	}
}

func TestConfigValidate(t *testing.T) {
	valid := Config{UserClaim: "user_id", JWKSRefresh: DefaultJWKSRefresh}
	tests := []struct {
		name    string
		mod     func(*Config)
		wantErr string // empty: valid
	}{
		{name: "defaults", mod: func(*Config) {}},
		{name: "custom claim and cookie", mod: func(c *Config) { c.UserClaim = "sub"; c.SessionCookie = "__Host-session" }},
		{name: "empty user claim", mod: func(c *Config) { c.UserClaim = "" }, wantErr: "NOTIFY_USER_CLAIM must not be empty"},
		{name: "blank user claim", mod: func(c *Config) { c.UserClaim = "  " }, wantErr: "NOTIFY_USER_CLAIM must not be empty"},
		{name: "reserved user claim", mod: func(c *Config) { c.UserClaim = "exp" }, wantErr: `NOTIFY_USER_CLAIM must not be "exp"`},
		{name: "topics as user claim", mod: func(c *Config) { c.UserClaim = "topics" }, wantErr: `NOTIFY_USER_CLAIM must not be "topics"`},
		{name: "bad cookie name", mod: func(c *Config) { c.SessionCookie = "my session" }, wantErr: "NOTIFY_SESSION_COOKIE is not a valid cookie name"},
		{name: "cookie name with separator", mod: func(c *Config) { c.SessionCookie = "a=b" }, wantErr: "NOTIFY_SESSION_COOKIE"},
		{name: "empty key file name", mod: func(c *Config) { c.PublicKeyFiles = flagext.StringSlice{"a.pem", ""} }, wantErr: "NOTIFY_JWT_PUBLIC_KEYS"},
		{name: "JWKS URLs", mod: jwksURLs("https://idp.example/.well-known/jwks.json", "http://127.0.0.1:8080/keys")},
		{name: "JWKS URL with credentials", mod: jwksURLs("https://user:pass@idp.example/jwks")},
		{name: "JWKS URL relative", mod: jwksURLs("/jwks.json"), wantErr: "NOTIFY_JWKS_URL must list absolute http or https URLs"},
		{name: "JWKS URL without host", mod: jwksURLs("https:///jwks.json"), wantErr: "NOTIFY_JWKS_URL"},
		{name: "JWKS URL other scheme", mod: jwksURLs("ftp://idp.example/jwks.json"), wantErr: "NOTIFY_JWKS_URL"},
		{name: "JWKS URL file", mod: jwksURLs("file:///etc/jwks.json"), wantErr: "NOTIFY_JWKS_URL"},
		{name: "JWKS URL unparsable", mod: jwksURLs("https://idp.example/%zz"), wantErr: "NOTIFY_JWKS_URL"},
		{name: "JWKS URL bad second", mod: jwksURLs("https://idp.example/jwks", "idp.example/jwks"), wantErr: "NOTIFY_JWKS_URL"},
		{name: "JWKS refresh zero", mod: func(c *Config) { c.JWKSRefresh = 0 }, wantErr: "NOTIFY_JWKS_REFRESH must be positive"},
		{name: "JWKS refresh negative", mod: func(c *Config) { c.JWKSRefresh = -time.Second }, wantErr: "NOTIFY_JWKS_REFRESH must be positive"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := valid
			tt.mod(&c)
			err := c.Validate()
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("Validate: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("Validate = %v, want error containing %q", err, tt.wantErr)
			}
		})
	}
}

func jwksURLs(urls ...string) func(*Config) {
	return func(c *Config) { c.JWKSURLs = urls }
}

// TestConfigValidateHidesURL: a JWKS URL may carry credentials, so an
// error about it does not quote it.
func TestConfigValidateHidesURL(t *testing.T) {
	c := Config{UserClaim: "user_id", JWKSRefresh: time.Minute, JWKSURLs: []string{"ftp://user:hunter2@idp.example/"}}
	err := c.Validate()
	if err == nil || strings.Contains(err.Error(), "hunter2") {
		t.Fatalf("Validate = %v, want an error not quoting the URL", err)
	}
}
