package deploytest

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"
)

const (
	rulesFile     = "../prometheus/rules.yaml"
	dashboardFile = "../grafana/notify.json"
)

// contractMetrics are the notify_* series the node exports (DESIGN.md's
// metrics list and the API's): what the rules and the dashboard may use.
// TestLiveMetrics checks the same names against the running binary.
var contractMetrics = []string{
	"notify_connections", "notify_connections_accepted_total", "notify_connections_rejected_total",
	"notify_disconnects_total", "notify_messages_received_total", "notify_messages_delivered_total",
	"notify_messages_dropped_total", "notify_broker_up", "notify_broker_reconnects_total",
	"notify_cluster_members", "notify_ring_partitions_owned", "notify_forwarded_connections",
	"notify_forward_errors_total", "notify_rebalance_closes_total", "notify_api_requests_total",
	"notify_api_request_duration_seconds", // histogram
	"notify_broker_subscription_lost_total",
}

type rulesFileT struct {
	Groups []struct {
		Name     string `json:"name"`
		Interval string `json:"interval,omitempty"`
		Rules    []rule `json:"rules"`
	} `json:"groups"`
}

type rule struct {
	Alert       string            `json:"alert,omitempty"`
	Record      string            `json:"record,omitempty"`
	Expr        string            `json:"expr"`
	For         string            `json:"for,omitempty"`
	Labels      map[string]string `json:"labels,omitempty"`
	Annotations map[string]string `json:"annotations,omitempty"`
}

func readRules(t *testing.T) rulesFileT {
	t.Helper()
	raw, err := os.ReadFile(rulesFile)
	if err != nil {
		t.Fatal(err)
	}
	var rf rulesFileT
	if err := decodeStrict(raw, &rf); err != nil {
		t.Fatalf("%s: %v", rulesFile, err)
	}
	return rf
}

// A Grafana dashboard, the parts we check.
type dashboard struct {
	UID           string  `json:"uid"`
	Title         string  `json:"title"`
	SchemaVersion int     `json:"schemaVersion"`
	Panels        []panel `json:"panels"`
	Templating    struct {
		List []struct {
			Name       string          `json:"name"`
			Type       string          `json:"type"`
			Query      json.RawMessage `json:"query"`
			Definition string          `json:"definition"`
		} `json:"list"`
	} `json:"templating"`
}

type panel struct {
	ID         int                      `json:"id"`
	Type       string                   `json:"type"`
	Title      string                   `json:"title"`
	Datasource json.RawMessage          `json:"datasource"`
	GridPos    struct{ H, W, X, Y int } `json:"gridPos"`
	Targets    []struct {
		RefID string `json:"refId"`
		Expr  string `json:"expr"`
	} `json:"targets"`
	Panels []panel `json:"panels"`
}

func readDashboard(t *testing.T) dashboard {
	t.Helper()
	raw, err := os.ReadFile(dashboardFile)
	if err != nil {
		t.Fatal(err)
	}
	var d dashboard
	if err := json.Unmarshal(raw, &d); err != nil {
		t.Fatalf("%s: %v", dashboardFile, err)
	}
	return d
}

func (d dashboard) allPanels() []panel {
	var out []panel
	var walk func([]panel)
	walk = func(ps []panel) {
		for _, p := range ps {
			out = append(out, p)
			walk(p.Panels)
		}
	}
	walk(d.Panels)
	return out
}

// queries lists every PromQL expression of the dashboard: panel targets and
// variable queries.
func (d dashboard) queries() []string {
	var out []string
	for _, p := range d.allPanels() {
		for _, tg := range p.Targets {
			out = append(out, tg.Expr)
		}
	}
	for _, v := range d.Templating.List {
		if v.Definition != "" {
			out = append(out, v.Definition)
		}
	}
	return out
}

var metricName = regexp.MustCompile(`\bnotify_[a-zA-Z0-9_]+`)

// usedMetrics maps each notify_* name the rules and the dashboard use to
// where it is used.
func usedMetrics(t *testing.T) map[string][]string {
	t.Helper()
	used := map[string][]string{}
	add := func(where, expr string) {
		for _, m := range metricName.FindAllString(expr, -1) {
			if !slices.Contains(used[m], where) {
				used[m] = append(used[m], where)
			}
		}
	}
	for _, g := range readRules(t).Groups {
		for _, r := range g.Rules {
			add("rules.yaml:"+r.Alert+r.Record, r.Expr)
		}
	}
	for _, q := range readDashboard(t).queries() {
		add("notify.json", q)
	}
	return used
}

// baseName strips a histogram's series suffix.
func baseName(m string) string {
	for _, s := range []string{"_bucket", "_sum", "_count"} {
		if b, ok := strings.CutSuffix(m, s); ok && slices.Contains(contractMetrics, b) {
			return b
		}
	}
	return m
}

func TestRules(t *testing.T) {
	rf := readRules(t)
	alerts := map[string]rule{}
	for _, g := range rf.Groups {
		for _, r := range g.Rules {
			if r.Alert == "" {
				continue
			}
			if _, dup := alerts[r.Alert]; dup {
				t.Errorf("alert %s defined twice", r.Alert)
			}
			alerts[r.Alert] = r
			if s := r.Labels["severity"]; s != "critical" && s != "warning" {
				t.Errorf("%s: severity %q, want critical or warning", r.Alert, s)
			}
			if r.Annotations["summary"] == "" || r.Annotations["description"] == "" {
				t.Errorf("%s: want summary and description annotations", r.Alert)
			}
			if !strings.Contains(r.Expr, `job="notify"`) {
				t.Errorf("%s: expression does not select job=\"notify\" (the ServiceMonitors' job): %s", r.Alert, r.Expr)
			}
			if _, err := time.ParseDuration(r.For); r.For != "" && err != nil {
				t.Errorf("%s: for %q: %v", r.Alert, r.For, err)
			}
		}
	}
	// The alerts the issue asks for, by what they watch.
	for _, want := range []struct{ what, expr, forDur string }{
		{"broker down", "notify_broker_up{job=\"notify\"} == 0", "1m"},
		{"no ready nodes", "notify_broker_up", ""},
		{"slow-consumer cuts", `code="4008"`, ""},
		{"members below replicas", "notify_cluster_members", ""},
		{"relay errors", "notify_forward_errors_total", ""},
	} {
		found := false
		for _, r := range alerts {
			if strings.Contains(r.Expr, want.expr) && (want.forDur == "" || r.For == want.forDur) {
				found = true
			}
		}
		if !found {
			t.Errorf("no %s alert (expression with %s, for %q)", want.what, want.expr, want.forDur)
		}
	}
}

func TestDashboard(t *testing.T) {
	d := readDashboard(t)
	if d.UID == "" || d.Title == "" || d.SchemaVersion < 36 {
		t.Errorf("dashboard uid %q title %q schemaVersion %d", d.UID, d.Title, d.SchemaVersion)
	}
	vars := map[string]bool{}
	for _, v := range d.Templating.List {
		vars[v.Name] = true
	}
	ids := map[int]bool{}
	varRef := regexp.MustCompile(`\$\{?([A-Za-z_][A-Za-z0-9_]*)`)
	for _, p := range d.allPanels() {
		if ids[p.ID] {
			t.Errorf("panel id %d used twice", p.ID)
		}
		ids[p.ID] = true
		if p.GridPos.W <= 0 || p.GridPos.H <= 0 || p.GridPos.X+p.GridPos.W > 24 {
			t.Errorf("panel %q: gridPos %+v", p.Title, p.GridPos)
		}
		if p.Type == "row" {
			continue
		}
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no queries", p.Title)
		}
		refs := map[string]bool{}
		for _, tg := range p.Targets {
			if tg.RefID == "" || refs[tg.RefID] || strings.TrimSpace(tg.Expr) == "" {
				t.Errorf("panel %q: target %q: want a unique refId and an expression", p.Title, tg.RefID)
			}
			refs[tg.RefID] = true
		}
		if !strings.Contains(string(p.Datasource), "${datasource}") {
			t.Errorf("panel %q: datasource %s, want ${datasource}", p.Title, p.Datasource)
		}
	}
	for _, q := range d.queries() {
		for _, m := range varRef.FindAllStringSubmatch(q, -1) {
			if !vars[m[1]] && !strings.HasPrefix(m[1], "__") {
				t.Errorf("query uses $%s, which is no dashboard variable: %s", m[1], q)
			}
		}
	}
	// Every metric the node exports has a panel.
	used := map[string]bool{}
	for _, q := range d.queries() {
		for _, m := range metricName.FindAllString(q, -1) {
			used[baseName(m)] = true
		}
	}
	for _, m := range contractMetrics {
		if !used[m] {
			t.Errorf("no dashboard panel shows %s", m)
		}
	}
}

// TestMonitoringUsesContractMetrics: no rule or panel names a metric the node
// does not promise (a typo would give an empty panel or a silent alert).
func TestMonitoringUsesContractMetrics(t *testing.T) {
	for m, where := range usedMetrics(t) {
		if !slices.Contains(contractMetrics, baseName(m)) {
			t.Errorf("%s (used in %v) is not a notify metric", m, where)
		}
		if b := baseName(m); b != m && b != "notify_api_request_duration_seconds" {
			t.Errorf("%s: only histograms have _bucket/_sum/_count series", m)
		}
	}
}

// TestDashboardQueriesParse has promtool parse every dashboard query, with
// Grafana's variables filled in, as recording rules.
func TestDashboardQueriesParse(t *testing.T) {
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		t.Skip("promtool not installed (deploy/test/run.sh installs it)")
	}
	subst := strings.NewReplacer("$__rate_interval", "5m", "$__interval", "1m", "$__range", "1h",
		"${datasource}", "prom", "$namespace", "apps", "$pod", ".*")
	var b strings.Builder
	b.WriteString("groups:\n  - name: dashboard\n    rules:\n")
	for i, q := range readDashboard(t).queries() {
		if strings.HasPrefix(q, "label_values(") {
			q = strings.TrimSuffix(strings.TrimPrefix(q, "label_values("), ")")
			q = q[:strings.LastIndex(q, ",")]
		}
		expr, _ := json.Marshal(subst.Replace(q))
		fmt.Fprintf(&b, "      - record: dashboard:query%d\n        expr: %s\n", i, expr)
	}
	f := filepath.Join(t.TempDir(), "dashboard-rules.yaml")
	if err := os.WriteFile(f, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(promtool, "check", "rules", f).CombinedOutput(); err != nil {
		t.Errorf("promtool check rules (dashboard queries): %v\n%s", err, out)
	}
}

func TestRulesPromtool(t *testing.T) {
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		t.Skip("promtool not installed (deploy/test/run.sh installs it)")
	}
	for _, args := range [][]string{{"check", "rules", rulesFile}, {"test", "rules", "../prometheus/rules_test.yaml"}} {
		if out, err := exec.Command(promtool, args...).CombinedOutput(); err != nil {
			t.Errorf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
}
