package deploytest

import (
	"bufio"
	"debug/elf"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	kjson "sigs.k8s.io/json"
	"sigs.k8s.io/yaml"
)

const repoRoot = "../.."

// instruction is one Dockerfile instruction, continuation lines joined.
type instruction struct {
	Cmd  string // upper case: FROM, RUN, ...
	Args string
	Line int
}

func readDockerfile() ([]instruction, error) {
	f, err := os.Open(filepath.Join(repoRoot, "Dockerfile"))
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []instruction
	var cur strings.Builder
	start := 0
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if cur.Len() == 0 && (line == "" || strings.HasPrefix(line, "#")) {
			continue
		}
		if cur.Len() == 0 {
			start = n
		}
		if strings.HasSuffix(line, "\\") {
			cur.WriteString(strings.TrimSuffix(line, "\\") + " ")
			continue
		}
		cur.WriteString(line)
		cmd, args, _ := strings.Cut(cur.String(), " ")
		out = append(out, instruction{Cmd: strings.ToUpper(cmd), Args: strings.TrimSpace(args), Line: start})
		cur.Reset()
	}
	return out, sc.Err()
}

// shellWords splits a command line on blanks, honouring double and single
// quotes (enough for the Dockerfile's build command).
func shellWords(s string) []string {
	var words []string
	var w strings.Builder
	inWord := false
	var quote rune
	for _, r := range s {
		switch {
		case quote != 0 && r == quote:
			quote = 0
		case quote != 0:
			w.WriteRune(r)
		case r == '"' || r == '\'':
			quote, inWord = r, true
		case r == ' ' || r == '\t':
			if inWord {
				words = append(words, w.String())
				w.Reset()
				inWord = false
			}
		default:
			w.WriteRune(r)
			inWord = true
		}
	}
	if inWord {
		words = append(words, w.String())
	}
	return words
}

// dockerBuild is the Dockerfile's `go build` command, taken apart.
type dockerBuild struct {
	Env    []string // KEY=VALUE before `go`
	Args   []string // after `go build`, without -o
	Output string   // -o
}

func parseDockerBuild(ins []instruction) (dockerBuild, error) {
	for _, in := range ins {
		if in.Cmd != "RUN" || !strings.Contains(in.Args, "go build") {
			continue
		}
		var b dockerBuild
		words := shellWords(in.Args)
		i := 0
		for ; i < len(words) && strings.HasPrefix(words[i], "--"); i++ { // RUN --mount=...
		}
		for ; i < len(words) && strings.Contains(words[i], "=") && words[i] != "go"; i++ {
			b.Env = append(b.Env, words[i])
		}
		if i+1 >= len(words) || words[i] != "go" || words[i+1] != "build" {
			return b, fmt.Errorf("Dockerfile:%d: want [VAR=value ...] go build ..., got %q", in.Line, in.Args)
		}
		for i += 2; i < len(words); i++ {
			if words[i] == "-o" && i+1 < len(words) {
				b.Output = words[i+1]
				i++
				continue
			}
			b.Args = append(b.Args, words[i])
		}
		return b, nil
	}
	return dockerBuild{}, fmt.Errorf("Dockerfile: no RUN go build")
}

// The version the test stamps into the binary through the Dockerfile's ldflags.
const testVersion = "deploytest-1.2.3"

var (
	buildOnce sync.Once
	binPath   string
	buildErr  error
	buildDir  string // set by TestMain
)

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "notify-deploytest-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	buildDir = dir
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// notifyBinary builds ./cmd/notify from the repository root with the
// Dockerfile's own build command (its environment, flags and ldflags, with
// the build arguments filled in), once per run: the binary under test is the
// one the image ships.
func notifyBinary(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		ins, err := readDockerfile()
		if err != nil {
			buildErr = err
			return
		}
		b, err := parseDockerBuild(ins)
		if err != nil {
			buildErr = err
			return
		}
		args := map[string]string{"TARGETOS": runtime.GOOS, "TARGETARCH": runtime.GOARCH, "VERSION": testVersion}
		expand := func(s string) string {
			return os.Expand(s, func(k string) string { return args[k] })
		}
		binPath = filepath.Join(buildDir, "notify")
		cmdArgs := []string{"build", "-o", binPath}
		for _, a := range b.Args {
			cmdArgs = append(cmdArgs, expand(a))
		}
		cmd := exec.Command("go", cmdArgs...)
		cmd.Dir = repoRoot
		cmd.Env = append(os.Environ(), "GOWORK=off")
		for _, e := range b.Env {
			cmd.Env = append(cmd.Env, expand(e))
		}
		start := time.Now()
		out, err := cmd.CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("%s (in the repository root): %v\n%s", strings.Join(cmd.Args, " "), err, out)
			return
		}
		fmt.Fprintf(os.Stderr, "deploytest: built %s in %v\n", binPath, time.Since(start).Round(100*time.Millisecond))
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binPath
}

func goVersionOfModule(t *testing.T) string {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(repoRoot, "go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^go (\d+\.\d+)`).FindSubmatch(raw)
	if m == nil {
		t.Fatal("go.mod has no go directive")
	}
	return string(m[1])
}

func TestDockerfile(t *testing.T) {
	ins, err := readDockerfile()
	if err != nil {
		t.Fatal(err)
	}
	d := summarizeDockerfile(ins)
	d.checkStages(t)
	b, err := parseDockerBuild(ins)
	if err != nil {
		t.Fatal(err)
	}
	checkGoBuild(t, b)
	d.checkFinalImage(t, b)
}

// dockerfile is what TestDockerfile checks of the Dockerfile's instructions.
type dockerfile struct {
	froms                 []instruction
	argDefaults           map[string]string
	user, entrypoint, cmd string
	copyFromBuild, expose []string
}

func summarizeDockerfile(ins []instruction) dockerfile {
	d := dockerfile{argDefaults: map[string]string{}}
	for _, in := range ins {
		switch in.Cmd {
		case "FROM":
			d.froms = append(d.froms, in)
		case "ARG":
			if k, v, ok := strings.Cut(in.Args, "="); ok {
				d.argDefaults[k] = v
			}
		case "USER":
			d.user = in.Args
		case "ENTRYPOINT":
			d.entrypoint = in.Args
		case "CMD":
			d.cmd = in.Args
		case "COPY":
			if w := shellWords(in.Args); len(w) == 3 && strings.HasPrefix(w[0], "--from=") {
				d.copyFromBuild = w[1:]
			}
		case "EXPOSE":
			d.expose = append(d.expose, strings.Fields(in.Args)...)
		}
	}
	return d
}

// checkStages: a build stage on go.mod's Go, a distroless final stage, a
// numeric non-root user.
func (d dockerfile) checkStages(t *testing.T) {
	t.Helper()
	if len(d.froms) < 2 {
		t.Fatalf("want a multi-stage build, got %d FROM", len(d.froms))
	}
	goVer := goVersionOfModule(t)
	if got := d.argDefaults["GO_VERSION"]; got != goVer {
		t.Errorf("ARG GO_VERSION=%s, go.mod says go %s", got, goVer)
	}
	if f := d.froms[0].Args; !strings.Contains(f, "golang:${GO_VERSION}") || !strings.HasSuffix(f, " AS build") {
		t.Errorf("build stage %q: want golang:${GO_VERSION} AS build", f)
	}
	if f := d.froms[len(d.froms)-1].Args; f != "gcr.io/distroless/static-debian12:nonroot" {
		t.Errorf("final stage FROM %q: want gcr.io/distroless/static-debian12:nonroot", f)
	}
	if d.user != "65532:65532" {
		t.Errorf("USER %q: want 65532:65532 (distroless nonroot, numeric so runAsNonRoot can verify it)", d.user)
	}
}

// checkGoBuild: static, trimmed, version-stamped.
func checkGoBuild(t *testing.T, b dockerBuild) {
	t.Helper()
	if !slices.Contains(b.Env, "CGO_ENABLED=0") {
		t.Errorf("go build without CGO_ENABLED=0: %v", b.Env)
	}
	if !slices.Contains(b.Args, "./cmd/notify") || !slices.Contains(b.Args, "-trimpath") {
		t.Errorf("go build args %v: want -trimpath ... ./cmd/notify", b.Args)
	}
	if !slices.ContainsFunc(b.Args, func(a string) bool { return strings.Contains(a, "-X main.version=${VERSION}") }) {
		t.Errorf("go build args %v: want -ldflags with -X main.version=${VERSION}", b.Args)
	}
}

// checkFinalImage: the final image has b's output on PATH, runs it as
// `serve` in exec form and exposes the node's ports.
func (d dockerfile) checkFinalImage(t *testing.T, b dockerBuild) {
	t.Helper()
	if len(d.copyFromBuild) != 2 || d.copyFromBuild[0] != b.Output {
		t.Fatalf("COPY --from=build %v: want the build output %s", d.copyFromBuild, b.Output)
	}
	bin := d.copyFromBuild[1]
	if d.entrypoint != fmt.Sprintf(`["%s"]`, bin) {
		t.Errorf("ENTRYPOINT %s: want [%q] (exec form; there is no shell)", d.entrypoint, bin)
	}
	if d.cmd != `["serve"]` {
		t.Errorf(`CMD %s: want ["serve"]`, d.cmd)
	}
	// kubectl exec NAME -- notify token (NOTES.txt) relies on PATH.
	if filepath.Dir(bin) != "/usr/local/bin" {
		t.Errorf("binary at %s: want it on distroless's PATH, in /usr/local/bin", bin)
	}
	for _, p := range []string{"3000", "8080", "7946/tcp", "7946/udp"} {
		if !slices.Contains(d.expose, p) {
			t.Errorf("EXPOSE lacks %s", p)
		}
	}
}

// TestImageBinary: the Dockerfile's build command gives a static binary
// (distroless/static has no libc), stamped with the version build argument.
func TestImageBinary(t *testing.T) {
	bin := notifyBinary(t)
	f, err := elf.Open(bin)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			t.Errorf("binary has a dynamic loader (PT_INTERP): not static")
		}
	}
	if libs, _ := f.ImportedLibraries(); len(libs) > 0 {
		t.Errorf("binary needs shared libraries %v", libs)
	}
	out, err := exec.Command(bin, "version").CombinedOutput()
	if err != nil || !strings.Contains(string(out), testVersion) {
		t.Errorf("notify version = %q (%v): want the -X main.version value %q", out, err, testVersion)
	}
}

// dockerignored reports whether .dockerignore excludes path (slash
// separated, relative to the context): the last matching pattern wins, a
// pattern matches a path or any of its parent directories, ** spans
// directories.
func dockerignored(patterns []string, path string) bool {
	ignored := false
	parts := strings.Split(path, "/")
	for _, p := range patterns {
		neg := strings.HasPrefix(p, "!")
		p = strings.TrimPrefix(strings.TrimPrefix(p, "!"), "/")
		re := regexp.QuoteMeta(p)
		re = strings.ReplaceAll(re, `\*\*/`, `(.*/)?`)
		re = strings.ReplaceAll(re, `\*\*`, `.*`)
		re = strings.ReplaceAll(re, `\*`, `[^/]*`)
		re = strings.ReplaceAll(re, `\?`, `[^/]`)
		rx := regexp.MustCompile("^" + re + "$")
		for i := 1; i <= len(parts); i++ {
			if rx.MatchString(strings.Join(parts[:i], "/")) {
				ignored = !neg
				break
			}
		}
	}
	return ignored
}

func TestDockerignore(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join(repoRoot, ".dockerignore"))
	if err != nil {
		t.Fatal(err)
	}
	var patterns []string
	for _, l := range strings.Split(string(raw), "\n") {
		if l = strings.TrimSpace(l); l != "" && !strings.HasPrefix(l, "#") {
			patterns = append(patterns, l)
		}
	}
	for path, want := range map[string]bool{
		".git/HEAD": true, "bin/notify": true, "helm/notify/Chart.yaml": true, "deploy/test/go.mod": true,
		"test/e2e/node_modules/x/y.js": true, "README.md": true,
		"go.mod": false, "go.sum": false, "cmd/notify/main.go": false, "node/pages/README.md": false,
	} {
		if got := dockerignored(patterns, path); got != want {
			t.Errorf(".dockerignore excludes %s = %v, want %v", path, got, want)
		}
	}

	// Every file the build reads: the Go files and embedded files of the
	// main module's packages that ./cmd/notify imports.
	cmd := exec.Command("go", "list", "-deps", "-f",
		`{{if .Module}}{{if .Module.Main}}{{.Dir}}{{range .GoFiles}} {{.}}{{end}}{{range .EmbedFiles}} {{.}}{{end}}{{end}}{{end}}`, "./cmd/notify")
	cmd.Dir = repoRoot
	cmd.Env = append(os.Environ(), "GOWORK=off", "CGO_ENABLED=0")
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	root, _ := filepath.Abs(repoRoot)
	n := 0
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		dir, _ := filepath.Rel(root, f[0])
		for _, file := range f[1:] {
			rel := filepath.ToSlash(filepath.Join(dir, file))
			n++
			if dockerignored(patterns, rel) {
				t.Errorf(".dockerignore excludes %s, which go build ./cmd/notify reads", rel)
			}
		}
	}
	for _, f := range []string{"go.mod", "go.sum"} {
		if dockerignored(patterns, f) {
			t.Errorf(".dockerignore excludes %s", f)
		}
	}
	if n == 0 {
		t.Errorf("go list found no files")
	}
}

// The docker-compose fields we use; decoding is strict, so a typo fails.
type composeFile struct {
	Name     string                    `json:"name"`
	XNotify  map[string]any            `json:"x-notify"`
	Services map[string]composeService `json:"services"`
}

type composeService struct {
	Image     string        `json:"image"`
	Build     *composeBuild `json:"build,omitempty"`
	Command   []string      `json:"command,omitempty"`
	Restart   string        `json:"restart,omitempty"`
	Hostname  string        `json:"hostname,omitempty"`
	DependsOn map[string]struct {
		Condition string `json:"condition"`
	} `json:"depends_on,omitempty"`
	Environment     map[string]string `json:"environment,omitempty"`
	Ports           []string          `json:"ports,omitempty"`
	Healthcheck     *composeHealth    `json:"healthcheck,omitempty"`
	StopGracePeriod string            `json:"stop_grace_period,omitempty"`
	Ulimits         map[string]struct {
		Soft int `json:"soft"`
		Hard int `json:"hard"`
	} `json:"ulimits,omitempty"`
}

type composeBuild struct {
	Context string            `json:"context"`
	Args    map[string]string `json:"args,omitempty"`
}

type composeHealth struct {
	Test     []string `json:"test"`
	Interval string   `json:"interval"`
	Timeout  string   `json:"timeout"`
	Retries  int      `json:"retries"`
}

func readCompose(t *testing.T) composeFile {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(repoRoot, "docker-compose.yml"))
	if err != nil {
		t.Fatal(err)
	}
	// Not YAMLToJSONStrict: it takes a key given beside a << merge (which
	// overrides the merged one, as compose wants) for a duplicate.
	j, err := yaml.YAMLToJSON(raw)
	if err != nil {
		t.Fatal(err)
	}
	var c composeFile
	strict, err := kjson.UnmarshalStrict(j, &c, kjson.DisallowDuplicateFields, kjson.DisallowUnknownFields)
	if err != nil || len(strict) > 0 {
		t.Fatalf("docker-compose.yml: %v %v", err, strict)
	}
	return c
}

// composeDefault resolves ${VAR:-default} to its default.
func composeDefault(s string) string {
	return regexp.MustCompile(`\$\{[A-Z_]+:-([^}]*)\}`).ReplaceAllString(s, "$1")
}

func TestCompose(t *testing.T) {
	c := readCompose(t)
	var nodes, redis []string
	for name, s := range c.Services {
		if _, ok := s.Environment["NOTIFY_NODE_NAME"]; ok {
			nodes = append(nodes, name)
		}
		if strings.HasPrefix(s.Image, "redis:") {
			redis = append(redis, name)
		}
	}
	slices.Sort(nodes)
	if len(nodes) != 3 || len(redis) != 1 {
		t.Fatalf("want three notify nodes and one redis, got nodes %v, redis %v", nodes, redis)
	}
	names := map[string]bool{}
	secrets := map[string]bool{}
	for i, name := range nodes {
		s := c.Services[name]
		env := s.Environment
		if names[env["NOTIFY_NODE_NAME"]] {
			t.Errorf("%s: node name %s is not unique", name, env["NOTIFY_NODE_NAME"])
		}
		names[env["NOTIFY_NODE_NAME"]] = true
		if want := fmt.Sprintf("%d:3000", 3001+i); !slices.Contains(s.Ports, want) {
			t.Errorf("%s publishes %v, want %s", name, s.Ports, want)
		}
		if s.Build == nil || s.Build.Context != "." {
			t.Errorf("%s: want build context . (the Dockerfile)", name)
		}
		if composeDefault(s.Image) != "notify:dev" {
			t.Errorf("%s: image %s, want notify:dev (make image builds it)", name, s.Image)
		}
		seeds := strings.Split(env["NOTIFY_JOIN"], ",")
		for _, n := range nodes {
			if !slices.Contains(seeds, n+":7946") {
				t.Errorf("%s: NOTIFY_JOIN %q lacks %s:7946", name, env["NOTIFY_JOIN"], n)
			}
		}
		for _, seed := range seeds {
			host, port, _ := strings.Cut(seed, ":")
			if _, ok := c.Services[host]; !ok || port != "7946" {
				t.Errorf("%s: join seed %s is not a service's gossip port", name, seed)
			}
		}
		if u := env["REDIS_URL"]; u != "redis://"+redis[0]+":6379/0" {
			t.Errorf("%s: REDIS_URL %q, want the redis service", name, u)
		}
		if s.DependsOn[redis[0]].Condition != "service_healthy" {
			t.Errorf("%s: want depends_on %s: service_healthy", name, redis[0])
		}
		secrets[env["NOTIFY_JWT_SECRET"]+"|"+env["NOTIFY_API_KEY"]] = true
		drain, err := time.ParseDuration(env["NOTIFY_DRAIN_TIMEOUT"])
		if err != nil {
			drain = defaultDrain
		}
		if grace, err := time.ParseDuration(s.StopGracePeriod); err != nil || grace <= drain {
			t.Errorf("%s: stop_grace_period %q must exceed NOTIFY_DRAIN_TIMEOUT %v", name, s.StopGracePeriod, drain)
		}
	}
	if len(secrets) != 1 {
		t.Errorf("nodes have different JWT secrets or API keys: tokens would work on some nodes only")
	}
	if c.Services[redis[0]].Healthcheck == nil {
		t.Errorf("redis has no healthcheck: service_healthy would never be reached")
	}
}
