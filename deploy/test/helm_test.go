package deploytest

import (
	"encoding/base64"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"helm.sh/helm/v3/pkg/action"
	"helm.sh/helm/v3/pkg/chart/loader"
	"helm.sh/helm/v3/pkg/chartutil"
	"helm.sh/helm/v3/pkg/cli/values"
	"helm.sh/helm/v3/pkg/getter"
	"helm.sh/helm/v3/pkg/release"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"sigs.k8s.io/yaml"
)

const (
	chartDir = "../../helm/notify"
	// The oldest Kubernetes the chart supports (preStop sleep action).
	kubeVersion = "v1.30.0"
)

// renderChart renders the chart the way `helm install --dry-run` (client
// side) and `helm template` do: values files and --set strings merged over
// the chart's values, validated against values.schema.json, every template
// executed.
func renderChart(releaseName, namespace, kube string, files []string, set ...string) (*release.Release, error) {
	chrt, err := loader.Load(chartDir)
	if err != nil {
		return nil, err
	}
	opts := values.Options{ValueFiles: files, Values: set}
	vals, err := opts.MergeValues(getter.Providers{})
	if err != nil {
		return nil, err
	}
	inst := action.NewInstall(&action.Configuration{Log: func(string, ...any) {}})
	inst.DryRun = true
	inst.ClientOnly = true
	inst.ReleaseName = releaseName
	inst.Namespace = namespace
	inst.KubeVersion, err = chartutil.ParseKubeVersion(kube)
	if err != nil {
		return nil, err
	}
	return inst.Run(chrt, vals)
}

func ptr[T any](v T) *T { return &v }

type helmCase struct {
	name    string
	release string
	file    string
	exp     expectations
	check   func(t *testing.T, d *deployment, rel *release.Release)
}

var helmCases = []helmCase{
	{
		name: "defaults", release: "notify", file: "defaults.yaml",
		exp: expectations{
			Kinds:    map[string]int{"StatefulSet": 1, "Service": 2, "Secret": 1, "ServiceAccount": 1, "PodDisruptionBudget": 1, "NetworkPolicy": 1},
			Replicas: ptr[int32](3), Redis: true, GRPC: true, Spread: true,
		},
		check: func(t *testing.T, d *deployment, rel *release.Release) {
			if d.sts.Name != "notify" || d.headless.Name != "notify-gossip" {
				t.Errorf("names %s, %s: want notify, notify-gossip for release notify", d.sts.Name, d.headless.Name)
			}
			s := ofKind[corev1.Secret](d.objs)[0]
			if got := keys(s.Data); !slices.Equal(got, []string{"api-key", "gossip-key", "jwt-secret", "redis-url"}) {
				t.Errorf("Secret keys = %v", got)
			}
			if g := *d.pod.TerminationGracePeriodSeconds; g != 40 {
				t.Errorf("terminationGracePeriodSeconds = %d, want 5 + 20 + 15", g)
			}
			if _, ok := d.pod.Containers[0].Resources.Limits[corev1.ResourceCPU]; ok {
				t.Errorf("default CPU limit set")
			}
			for _, want := range []string{"port-forward svc/notify", "port-forward pod/notify-0 9090", "notify token --user", "jwt-secret"} {
				if !strings.Contains(rel.Info.Notes, want) {
					t.Errorf("NOTES do not mention %q:\n%s", want, rel.Info.Notes)
				}
			}
			// The new settings at the node's defaults; the optional ones unset.
			for k, v := range map[string]string{"NOTIFY_API_AUTH": "on", "NOTIFY_EXPIRE_CONNECTIONS": "true", "NOTIFY_REFRESH_NOTICE": "30s", "NOTIFY_SUBSCRIBE_MODE": "pattern"} {
				if got, ok := d.envValue(k, "apps"); got != v {
					t.Errorf("%s = %q (set %v), want %q", k, got, ok, v)
				}
			}
			// One Redis server, by URL (exp.Redis checks REDIS_URL).
			if ref := d.env["REDIS_URL"].ValueFrom; ref == nil || ref.SecretKeyRef == nil || ref.SecretKeyRef.Key != "redis-url" {
				t.Errorf("REDIS_URL does not come from the chart's Secret key redis-url: %+v", ref)
			}
			for _, k := range []string{"NOTIFY_JWKS_URL", "NOTIFY_JWKS_REFRESH", "NOTIFY_PHOENIX_SECRET_KEY_BASE", "NOTIFY_PHOENIX_TOKEN_SALT", "NOTIFY_PHOENIX_TOKEN_MAX_AGE",
				"REDIS_SENTINEL_ADDRS", "REDIS_SENTINEL_MASTER", "REDIS_SENTINEL_PASSWORD", "REDIS_CLUSTER_ADDRS", "REDIS_USERNAME", "REDIS_PASSWORD"} {
				if _, ok := d.env[k]; ok {
					t.Errorf("%s set by default", k)
				}
			}
			if strings.Contains(rel.Info.Notes, "apiAuth") {
				t.Errorf("NOTES warn about config.apiAuth, which is on:\n%s", rel.Info.Notes)
			}
		},
	},
	{
		name: "minimal", release: "dev", file: "minimal.yaml",
		exp: expectations{
			Kinds:    map[string]int{"StatefulSet": 1, "Service": 2, "Secret": 1, "ServiceAccount": 1},
			Replicas: ptr[int32](1),
		},
		check: func(t *testing.T, d *deployment, rel *release.Release) {
			if d.sts.Name != "dev-notify" || d.headless.Name != "dev-notify-gossip" {
				t.Errorf("names %s, %s: want dev-notify, dev-notify-gossip", d.sts.Name, d.headless.Name)
			}
			if len(d.pod.TopologySpreadConstraints) != 0 {
				t.Errorf("topologySpreadConstraints: [] still renders %d", len(d.pod.TopologySpreadConstraints))
			}
			if !strings.Contains(rel.Info.Notes, "WARNING: no Redis") {
				t.Errorf("NOTES do not warn about the embedded broker:\n%s", rel.Info.Notes)
			}
		},
	},
	{
		name: "full", release: "push", file: "full.yaml",
		exp: expectations{
			Kinds: map[string]int{"StatefulSet": 1, "Service": 2, "Secret": 1, "ServiceAccount": 1, "ConfigMap": 1,
				"PodDisruptionBudget": 1, "NetworkPolicy": 1, "Ingress": 1, "HTTPRoute": 1, "ServiceMonitor": 1, "HorizontalPodAutoscaler": 1},
			Redis: true, GRPC: true, Spread: true,
		},
		check: func(t *testing.T, d *deployment, rel *release.Release) {
			c := d.container
			if !strings.HasSuffix(c.Image, "@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef") {
				t.Errorf("image %s: the digest should win over the tag", c.Image)
			}
			want := map[string]string{
				"NOTIFY_JWT_PUBLIC_KEYS":          "/etc/notify/jwt-keys/issuer-a.pem,/etc/notify/jwt-keys/issuer-b.pem",
				"NOTIFY_ALLOWED_ORIGINS":          "https://app.example.com,https://*.example.com",
				"NOTIFY_CLUSTER_LABEL":            "push-prod",
				"NOTIFY_DRAIN_TIMEOUT":            "1m30s",
				"NOTIFY_SEND_QUEUE_BYTES":         "1048576",
				"NOTIFY_MAX_CONNECTIONS":          "15000",
				"NOTIFY_MAX_CONNECTIONS_PER_USER": "5",
				"NOTIFY_USER_CLAIM":               "sub",
				"NOTIFY_REBALANCE_RATE":           "50",
				"NOTIFY_OPEN_TOPICS":              "true",
				"NOTIFY_API_AUTH":                 "on",
				"NOTIFY_JWKS_URL":                 "https://auth.example.com/.well-known/jwks.json,https://keys.example.com/jwks",
				"NOTIFY_JWKS_REFRESH":             "10m",
				"NOTIFY_EXPIRE_CONNECTIONS":       "true",
				"NOTIFY_REFRESH_NOTICE":           "1m",
				"NOTIFY_PHOENIX_TOKEN_SALT":       "user_socket",
				"NOTIFY_PHOENIX_TOKEN_MAX_AGE":    "3600",
				"GODEBUG":                         "madvdontneed=1",
			}
			for k, v := range want {
				if got, _ := d.envValue(k, "apps"); got != v {
					t.Errorf("%s = %q, want %q", k, got, v)
				}
			}
			if g := *d.pod.TerminationGracePeriodSeconds; g != 120 {
				t.Errorf("terminationGracePeriodSeconds = %d, want 120 as set", g)
			}
			if d.pod.PriorityClassName != "high" || d.pod.NodeSelector["kubernetes.io/os"] != "linux" || len(d.pod.Tolerations) != 1 || d.pod.Affinity == nil {
				t.Errorf("scheduling knobs not applied: %+v", d.pod)
			}
			if d.sts.Spec.Template.Labels["team"] != "push" || d.sts.Spec.Template.Annotations["example.com/scrape"] != "false" {
				t.Errorf("pod labels/annotations not applied")
			}
			s := ofKind[corev1.Secret](d.objs)[0]
			if got := keys(s.Data); !slices.Equal(got, []string{"api-key", "gossip-key", "jwt-secret", "phoenix-secret-key-base", "redis-url"}) {
				t.Errorf("Secret keys = %v", got)
			}
			if ref := d.env["NOTIFY_PHOENIX_SECRET_KEY_BASE"].ValueFrom; ref == nil || ref.SecretKeyRef == nil || ref.SecretKeyRef.Name != s.Name || ref.SecretKeyRef.Key != "phoenix-secret-key-base" {
				t.Errorf("NOTIFY_PHOENIX_SECRET_KEY_BASE does not come from Secret %s key phoenix-secret-key-base: %+v", s.Name, ref)
			}
			if d.sts.Spec.Template.Annotations["checksum/secret"] == "" || d.sts.Spec.Template.Annotations["checksum/jwt-keys"] == "" {
				t.Errorf("checksum annotations missing: %v", d.sts.Spec.Template.Annotations)
			}
			ing := ofKind[networkingv1.Ingress](d.objs)[0]
			for k, v := range map[string]string{
				"nginx.ingress.kubernetes.io/upstream-hash-by":   "$http_authorization$arg_authorization",
				"nginx.ingress.kubernetes.io/proxy-read-timeout": "3600",
				"nginx.ingress.kubernetes.io/proxy-send-timeout": "3600",
				"nginx.ingress.kubernetes.io/proxy-buffering":    "off",
				"cert-manager.io/cluster-issuer":                 "letsencrypt",
			} {
				if ing.Annotations[k] != v {
					t.Errorf("Ingress annotation %s = %q, want %q", k, ing.Annotations[k], v)
				}
			}
			np := ofKind[networkingv1.NetworkPolicy](d.objs)[0]
			if n := len(ingressRule(t, np, httpPort).From); n != 3 {
				t.Errorf("client rule admits %d peers, want the 2 of clientFrom and the pods themselves", n)
			}
			if from := ingressRule(t, np, internalPort).From; len(from) != 2 || from[1].NamespaceSelector == nil || from[1].PodSelector == nil {
				t.Errorf("internal rule admits %+v, want the pods themselves and monitoringFrom's Prometheus", from)
			}
			if strings.Contains(rel.Info.Notes, "monitoringFrom is empty") {
				t.Errorf("NOTES warn about networkPolicy.monitoringFrom, which is set:\n%s", rel.Info.Notes)
			}
			for _, want := range []string{"wss://push.example.com/notify/ws", "notify token --user", "Phoenix.Tokens"} {
				if !strings.Contains(rel.Info.Notes, want) {
					t.Errorf("NOTES do not mention %q:\n%s", want, rel.Info.Notes)
				}
			}
		},
	},
	{
		name: "existing secrets", release: "notify", file: "existing-secrets.yaml",
		exp: expectations{
			Kinds:    map[string]int{"StatefulSet": 1, "Service": 2, "ServiceAccount": 1, "PodDisruptionBudget": 1, "NetworkPolicy": 1},
			Replicas: ptr[int32](3), Redis: true, GRPC: true, Spread: true,
			NoSecretObject: true,
			External: map[string]secretRef{
				"REDIS_URL":                      {"redis-credentials", "url"},
				"NOTIFY_JWT_SECRET":              {"notify-credentials", "hmac"},
				"NOTIFY_API_KEY":                 {"notify-credentials", "api"},
				"NOTIFY_GOSSIP_KEY":              {"notify-credentials", "gossip"},
				"NOTIFY_PHOENIX_SECRET_KEY_BASE": {"notify-credentials", "phoenix"},
			},
		},
		check: func(t *testing.T, d *deployment, rel *release.Release) {
			if got, _ := d.envValue("NOTIFY_JWT_PUBLIC_KEYS", "apps"); got != "/etc/notify/jwt-keys/current.pem,/etc/notify/jwt-keys/next.pem" {
				t.Errorf("NOTIFY_JWT_PUBLIC_KEYS = %q", got)
			}
			if _, ok := d.sts.Spec.Template.Annotations["checksum/secret"]; ok {
				t.Errorf("checksum/secret annotation without a rendered Secret")
			}
			// No credential may appear anywhere in the manifest.
			if strings.Contains(rel.Manifest, "redis://") || strings.Contains(rel.Manifest, "kind: Secret") {
				t.Errorf("manifest carries a credential or a Secret:\n%s", rel.Manifest)
			}
		},
	},
	{
		name: "jwks only", release: "notify", file: "jwks-only.yaml",
		exp: expectations{
			Kinds:    map[string]int{"StatefulSet": 1, "Service": 2, "Secret": 1, "ServiceAccount": 1, "PodDisruptionBudget": 1, "NetworkPolicy": 1},
			Replicas: ptr[int32](3), Redis: true, GRPC: true, Spread: true,
		},
		check: func(t *testing.T, d *deployment, rel *release.Release) {
			// A JWKS URL alone verifies tokens: no secret generated or passed.
			if _, ok := d.env["NOTIFY_JWT_SECRET"]; ok {
				t.Errorf("NOTIFY_JWT_SECRET set although the JWK Sets verify tokens")
			}
			s := ofKind[corev1.Secret](d.objs)[0]
			if got := keys(s.Data); !slices.Equal(got, []string{"api-key", "gossip-key", "redis-url"}) {
				t.Errorf("Secret keys = %v, want no jwt-secret", got)
			}
			for k, v := range map[string]string{"NOTIFY_JWKS_URL": "https://idp.example.com/.well-known/jwks.json", "NOTIFY_JWKS_REFRESH": "5m"} {
				if got, _ := d.envValue(k, "apps"); got != v {
					t.Errorf("%s = %q, want %q", k, got, v)
				}
			}
			if !strings.Contains(rel.Info.Notes, "JWK Sets at auth.jwks.urls") || strings.Contains(rel.Info.Notes, "notify token") {
				t.Errorf("NOTES should point to the JWK Sets, not to notify token:\n%s", rel.Info.Notes)
			}
		},
	},
	{
		name: "sentinel", release: "notify", file: "sentinel.yaml",
		exp: expectations{
			Kinds:    map[string]int{"StatefulSet": 1, "Service": 2, "Secret": 1, "ServiceAccount": 1, "PodDisruptionBudget": 1, "NetworkPolicy": 1},
			Replicas: ptr[int32](3), GRPC: true, Spread: true,
			// Redis false: REDIS_URL must not be set next to the sentinels.
		},
		check: func(t *testing.T, d *deployment, rel *release.Release) {
			for k, v := range map[string]string{
				"REDIS_SENTINEL_ADDRS":  "redis-sentinel-0.redis-sentinel:26379,redis-sentinel-1.redis-sentinel:26379,redis-sentinel-2.redis-sentinel:26379",
				"REDIS_SENTINEL_MASTER": "mymaster",
				"REDIS_USERNAME":        "notify",
				"NOTIFY_SUBSCRIBE_MODE": "user",
			} {
				if got, ok := d.envValue(k, "apps"); got != v || d.env[k].ValueFrom != nil {
					t.Errorf("%s = %q (set %v, %+v), want the literal %q", k, got, ok, d.env[k].ValueFrom, v)
				}
			}
			for _, k := range []string{"REDIS_URL", "REDIS_CLUSTER_ADDRS", "PUBSUB_REDIS_ADDR"} {
				if _, ok := d.env[k]; ok {
					t.Errorf("%s set next to REDIS_SENTINEL_ADDRS: the node refuses two topologies", k)
				}
			}
			s := ofKind[corev1.Secret](d.objs)[0]
			if got := keys(s.Data); !slices.Equal(got, []string{"api-key", "gossip-key", "jwt-secret", "redis-password", "redis-sentinel-password"}) {
				t.Errorf("Secret keys = %v, want the passwords and no redis-url", got)
			}
			for k, want := range map[string]string{"REDIS_PASSWORD": "redis-password", "REDIS_SENTINEL_PASSWORD": "redis-sentinel-password"} {
				e, ok := d.env[k]
				if !ok || e.Value != "" || e.ValueFrom == nil || e.ValueFrom.SecretKeyRef == nil || e.ValueFrom.SecretKeyRef.Name != s.Name || e.ValueFrom.SecretKeyRef.Key != want {
					t.Errorf("%s does not come from Secret %s key %s: %+v", k, s.Name, want, e)
				}
			}
			if v, _ := secretValue(s, "redis-password"); v != "redis-s3cret-0123456789" {
				t.Errorf("Secret redis-password = %q, want redis.password", v)
			}
			if v, _ := secretValue(s, "redis-sentinel-password"); v != "sentinel-s3cret-0123456789" {
				t.Errorf("Secret redis-sentinel-password = %q, want redis.sentinel.password", v)
			}
			if strings.Contains(rel.Info.Notes, "no Redis") {
				t.Errorf("NOTES warn about no Redis, with Sentinel configured:\n%s", rel.Info.Notes)
			}
		},
	},
	{
		name: "cluster", release: "notify", file: "cluster.yaml",
		exp: expectations{
			Kinds:    map[string]int{"StatefulSet": 1, "Service": 2, "Secret": 1, "ServiceAccount": 1, "PodDisruptionBudget": 1, "NetworkPolicy": 1},
			Replicas: ptr[int32](3), GRPC: true, Spread: true,
			External: map[string]secretRef{"REDIS_PASSWORD": {"redis-cluster-credentials", "redis-password"}},
		},
		check: func(t *testing.T, d *deployment, rel *release.Release) {
			want := "redis-cluster-0.redis-cluster-headless:6379,redis-cluster-1.redis-cluster-headless:6379,redis-cluster-2.redis-cluster-headless:6379"
			if got, _ := d.envValue("REDIS_CLUSTER_ADDRS", "apps"); got != want {
				t.Errorf("REDIS_CLUSTER_ADDRS = %q, want %q", got, want)
			}
			if got, _ := d.envValue("NOTIFY_SUBSCRIBE_MODE", "apps"); got != "sharded" {
				t.Errorf("NOTIFY_SUBSCRIBE_MODE = %q, want sharded", got)
			}
			if _, ok := d.env["REDIS_PASSWORD"]; !ok {
				t.Errorf("REDIS_PASSWORD not read from redis.existingSecret")
			}
			for _, k := range []string{"REDIS_URL", "REDIS_SENTINEL_ADDRS", "REDIS_SENTINEL_MASTER", "REDIS_SENTINEL_PASSWORD", "REDIS_USERNAME"} {
				if _, ok := d.env[k]; ok {
					t.Errorf("%s set with a Redis Cluster", k)
				}
			}
			s := ofKind[corev1.Secret](d.objs)[0]
			if got := keys(s.Data); !slices.Equal(got, []string{"api-key", "gossip-key", "jwt-secret"}) {
				t.Errorf("Secret keys = %v, want no Redis credential (the default redis.url is not used)", got)
			}
			if strings.Contains(rel.Manifest, "redis://") || strings.Contains(rel.Info.Notes, "no Redis") {
				t.Errorf("the default redis.url leaks into a Cluster rendering, or NOTES warn about no Redis")
			}
		},
	},
}

// ingressRule is np's one rule that opens TCP port.
func ingressRule(t *testing.T, np *networkingv1.NetworkPolicy, port int32) networkingv1.NetworkPolicyIngressRule {
	t.Helper()
	var found []networkingv1.NetworkPolicyIngressRule
	for _, r := range np.Spec.Ingress {
		if len(r.Ports) > 0 && ingressOpens(r, port, "", corev1.ProtocolTCP) {
			found = append(found, r)
		}
	}
	if len(found) != 1 {
		t.Fatalf("NetworkPolicy %s: %d rules open port %d, want 1", np.Name, len(found), port)
	}
	return found[0]
}

// TestHelmMonitoringWithoutPeers: a ServiceMonitor with the NetworkPolicy
// on and no networkPolicy.monitoringFrom renders, but the NOTES warn that a
// Prometheus outside the release cannot scrape the internal port.
func TestHelmMonitoringWithoutPeers(t *testing.T) {
	rel, err := renderChart("notify", "apps", kubeVersion, nil, "serviceMonitor.enabled=true")
	if err != nil {
		t.Fatalf("render: %v", err)
	}
	checkDeployment(t, decodeManifests(t, "serviceMonitor", []byte(rel.Manifest)), expectations{
		Namespace: "apps", Replicas: ptr[int32](3), Redis: true, GRPC: true, Spread: true,
	})
	if !strings.Contains(rel.Info.Notes, "networkPolicy.monitoringFrom is empty") {
		t.Errorf("NOTES do not warn that Prometheus cannot reach the internal port:\n%s", rel.Info.Notes)
	}
}

func TestHelmChart(t *testing.T) {
	for _, tc := range helmCases {
		t.Run(tc.name, func(t *testing.T) {
			rel, err := renderChart(tc.release, "apps", kubeVersion, []string{filepath.Join("testdata", tc.file)})
			if err != nil {
				t.Fatalf("render: %v", err)
			}
			if len(rel.Hooks) > 0 {
				t.Errorf("unexpected hooks: %d", len(rel.Hooks))
			}
			objs := decodeManifests(t, tc.file, []byte(rel.Manifest))
			tc.exp.Namespace = "apps"
			d := checkDeployment(t, objs, tc.exp)
			if tc.check != nil && !t.Failed() {
				tc.check(t, d, rel)
			}
			if strings.TrimSpace(rel.Info.Notes) == "" {
				t.Errorf("NOTES.txt renders empty")
			}
			if strings.Contains(rel.Info.Notes, "<no value>") || strings.Contains(rel.Manifest, "<no value>") {
				t.Errorf("a template printed <no value>")
			}
		})
	}
}

// TestHelmNoInlineSecrets renders with values given inline and checks no
// credential from values reaches the StatefulSet itself: they go through the
// chart's Secret.
func TestHelmNoInlineSecrets(t *testing.T) {
	for file, secrets := range map[string][]string{
		"full.yaml":     {"full-jwt-secret-0123456789abcdef", "full-api-key-0123456789abcdef", "s3cret", "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=", "full-phoenix-secret-key-base-0123456789abcdef"},
		"sentinel.yaml": {"redis-s3cret-0123456789", "sentinel-s3cret-0123456789"},
	} {
		rel, err := renderChart("notify", "apps", kubeVersion, []string{filepath.Join("testdata", file)})
		if err != nil {
			t.Fatal(err)
		}
		for _, doc := range strings.Split(rel.Manifest, "\n---") {
			if strings.Contains(doc, "kind: Secret\n") {
				continue
			}
			for _, secret := range secrets {
				if strings.Contains(doc, secret) || strings.Contains(doc, base64.StdEncoding.EncodeToString([]byte(secret))) {
					t.Errorf("%s: credential %q outside the Secret:\n%s", file, secret, doc)
				}
			}
		}
	}
}

// TestHelmAPIAuthOff: config.apiAuth off, written the ways a user would (a
// bare YAML off, which YAML 1.1 reads as false; --set strings), renders
// NOTIFY_API_AUTH=off, keeps the API key, and the NOTES warn loudly.
func TestHelmAPIAuthOff(t *testing.T) {
	bare := filepath.Join(t.TempDir(), "api-auth-off.yaml")
	if err := os.WriteFile(bare, []byte("config:\n  apiAuth: off\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name  string
		files []string
		set   []string
	}{
		{"yaml off", []string{bare}, nil},
		{"set off", nil, []string{"config.apiAuth=off"}},
		{"set false", nil, []string{"config.apiAuth=false"}},
		{"with ingress", nil, []string{"config.apiAuth=off", "ingress.enabled=true"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rel, err := renderChart("notify", "apps", kubeVersion, tc.files, tc.set...)
			if err != nil {
				t.Fatalf("render: %v", err)
			}
			d := checkDeployment(t, decodeManifests(t, tc.name, []byte(rel.Manifest)), expectations{
				Namespace: "apps", Replicas: ptr[int32](3), Redis: true, GRPC: true, Spread: true,
			})
			if got, _ := d.envValue("NOTIFY_API_AUTH", "apps"); got != "off" {
				t.Errorf("NOTIFY_API_AUTH = %q, want off", got)
			}
			wants := []string{"WARNING: config.apiAuth is off", "WITHOUT ANY KEY", "every pod in the cluster"}
			if slices.Contains(tc.set, "ingress.enabled=true") {
				wants = append(wants, "through the Ingress")
			}
			for _, want := range wants {
				if !strings.Contains(rel.Info.Notes, want) {
					t.Errorf("NOTES do not say %q:\n%s", want, rel.Info.Notes)
				}
			}
			if strings.Contains(rel.Info.Notes, "Bearer $API_KEY") {
				t.Errorf("NOTES still ask for the API key:\n%s", rel.Info.Notes)
			}
		})
	}
}

// TestHelmRejects: bad values fail at install, through values.schema.json or
// the templates' own checks, with a message naming the problem.
func TestHelmRejects(t *testing.T) {
	for _, tc := range []struct {
		name string
		set  []string
		want string
	}{
		{"replicas not a number", []string{"replicaCount=three"}, "replicaCount"},
		{"replicas negative", []string{"replicaCount=-1"}, "replicaCount"},
		{"replicas zero", []string{"replicaCount=0"}, "replicaCount"},
		{"image tag not a string", []string{"image.tag=123"}, "image.tag"},
		{"drain timeout not a duration", []string{"config.drainTimeout=soon"}, "drainTimeout"},
		{"drain timeout in ms", []string{"config.drainTimeout=500ms"}, "drainTimeout"},
		{"unknown top-level key", []string{"replicas=3"}, "replicas"},
		{"unknown nested key", []string{"ingress.hostname=x"}, "hostname"},
		{"bad log level", []string{"config.logLevel=verbose"}, "logLevel"},
		{"bad redis URL", []string{"redis.url=localhost:6379"}, "redis.url"},
		{"gossip key not 16/24/32 bytes", []string{"gossip.key=c2hvcnQ="}, "gossip.key"},
		{"grace not longer than preStop + drain", []string{"terminationGracePeriodSeconds=25"}, "terminationGracePeriodSeconds"},
		{"several nodes without Redis", []string{"redis.url="}, "redis.url or redis.existingSecret"},
		{"HPA without Redis", []string{"redis.url=", "replicaCount=1", "autoscaling.enabled=true"}, "redis.url or redis.existingSecret"},
		{"existing public keys without file names", []string{"auth.publicKeys.existingConfigMap=keys"}, "auth.publicKeys.keys"},
		{"HTTPRoute without a Gateway", []string{"httpRoute.enabled=true"}, "parentRefs"},
		{"publish size over the send queue", []string{"config.maxPublishSize=300000"}, "maxPublishSize"},
		{"send queue too small", []string{"config.sendQueueBytes=1024"}, "sendQueueBytes"},
		{"negative connection limit", []string{"config.maxConnections=-1"}, "maxConnections"},
		{"ping interval zero", []string{"config.pingInterval=0s"}, "pingInterval"},
		{"rebalance rate zero", []string{"config.rebalanceRate=0"}, "rebalanceRate"},
		{"reserved user claim", []string{"auth.userClaim=exp"}, "userClaim"},
		{"origin without scheme", []string{"auth.allowedOrigins={app.example.com}"}, "allowedOrigins"},
		{"HPA without metrics", []string{"autoscaling.enabled=true", "autoscaling.targetCPUUtilizationPercentage=null"}, "metric"},
		{"API auth neither on nor off", []string{"config.apiAuth=none"}, "apiAuth"},
		{"JWKS URL not http(s)", []string{"auth.jwks.urls={ftp://keys.example.com/jwks}"}, "jwks.urls"},
		{"JWKS URL relative", []string{"auth.jwks.urls={/jwks.json}"}, "jwks.urls"},
		{"JWKS refresh zero", []string{"auth.jwks.urls={https://idp.example.com/jwks}", "auth.jwks.refresh=0s"}, "jwks.refresh"},
		{"JWKS refresh not a duration", []string{"auth.jwks.refresh=often"}, "jwks.refresh"},
		{"refresh notice not a duration", []string{"auth.refreshNotice=soon"}, "refreshNotice"},
		{"expire connections not a boolean", []string{"auth.expireConnections=yes"}, "expireConnections"},
		{"Phoenix key base too short", []string{"auth.phoenix.secretKeyBase=short"}, "secretKeyBase"},
		{"Phoenix max age zero", []string{"auth.phoenix.tokenMaxAge=0"}, "tokenMaxAge"},
		{"Phoenix salt empty", []string{"auth.phoenix.tokenSalt="}, "tokenSalt"},
		{"Sentinel and Cluster both", []string{"redis.sentinel.addrs={sentinel:26379}", "redis.sentinel.master=mymaster", "redis.cluster.addrs={redis-cluster:6379}"}, "redis.sentinel.addrs and redis.cluster.addrs are both set"},
		{"Sentinel without master", []string{"redis.sentinel.addrs={sentinel:26379}"}, "redis.sentinel.master is required"},
		{"Sentinel master without sentinels", []string{"redis.sentinel.master=mymaster"}, "without redis.sentinel.addrs"},
		{"Sentinel password without sentinels", []string{"redis.cluster.addrs={redis-cluster:6379}", "redis.sentinel.password=x"}, "redis.sentinel.password"},
		{"Sentinel address without port", []string{"redis.sentinel.addrs={sentinel}", "redis.sentinel.master=mymaster"}, "sentinel.addrs"},
		{"Cluster address a URL", []string{"redis.cluster.addrs={redis://redis-cluster:6379}"}, "cluster.addrs"},
		{"Redis password with a URL", []string{"redis.password=x"}, "redis.password"},
		{"Redis username without password", []string{"redis.cluster.addrs={redis-cluster:6379}", "redis.username=notify"}, "redis.username needs a password"},
		{"bad subscribe mode", []string{"redis.subscribeMode=shard"}, "subscribeMode"},
		{"sharded subscribe mode on one server", []string{"redis.subscribeMode=sharded"}, "needs redis.cluster.addrs"},
		{"sharded subscribe mode on Sentinel", []string{"redis.sentinel.addrs={sentinel:26379}", "redis.sentinel.master=mymaster", "redis.subscribeMode=sharded"}, "needs redis.cluster.addrs"},
		{"user subscribe mode without Redis", []string{"replicaCount=1", "redis.url=", "redis.subscribeMode=user"}, "subscribeMode"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := renderChart("notify", "apps", kubeVersion, nil, tc.set...)
			if err == nil {
				t.Fatalf("rendered with %v; want an error mentioning %q", tc.set, tc.want)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q does not mention %q", err, tc.want)
			}
		})
	}
	t.Run("kubernetes too old", func(t *testing.T) {
		if _, err := renderChart("notify", "apps", "v1.29.0", nil); err == nil || !strings.Contains(err.Error(), "kubeVersion") {
			t.Errorf("rendered for Kubernetes 1.29 (no preStop sleep action): %v", err)
		}
	})
}

// TestHelmReadmeValues: the values table in the chart's README lists exactly
// the keys of values.yaml, with their defaults.
func TestHelmReadmeValues(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join(chartDir, "values.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var vals map[string]any
	if err := yaml.Unmarshal(raw, &vals); err != nil {
		t.Fatal(err)
	}
	want := map[string]string{}
	flattenValues("", vals, want)

	readme, err := os.ReadFile(filepath.Join(chartDir, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	row := regexp.MustCompile("(?m)^\\| `([^`]+)` \\| (`[^|]*`|[^|]*) \\|")
	got := map[string]string{}
	for _, m := range row.FindAllStringSubmatch(string(readme), -1) {
		if _, dup := got[m[1]]; dup {
			t.Errorf("README lists %s twice", m[1])
		}
		got[m[1]] = strings.Trim(strings.TrimSpace(m[2]), "`")
	}
	for k, def := range want {
		g, ok := got[k]
		switch {
		case !ok:
			t.Errorf("README values table lacks %s (default %s)", k, def)
		case g != def:
			t.Errorf("README: %s default %q, values.yaml has %q", k, g, def)
		}
	}
	for k := range got {
		if _, ok := want[k]; !ok {
			t.Errorf("README lists %s, which values.yaml does not have", k)
		}
	}
}

// opaqueValues are passed to Kubernetes as they are: the README documents
// them as one row each.
var opaqueValues = []string{"resources", "podSecurityContext", "securityContext", "livenessProbe", "readinessProbe", "autoscaling.behavior"}

// flattenValues lists the leaves of values.yaml as dotted keys with their
// defaults rendered the way the README shows them (compact JSON). Maps with
// content are descended into; lists, empty maps and opaqueValues are leaves.
func flattenValues(prefix string, v any, out map[string]string) {
	if m, ok := v.(map[string]any); ok && len(m) > 0 && !slices.Contains(opaqueValues, prefix) {
		for k, sub := range m {
			key := k
			if prefix != "" {
				key = prefix + "." + k
			}
			flattenValues(key, sub, out)
		}
		return
	}
	b, _ := yaml.Marshal(v)
	j, _ := yaml.YAMLToJSON(b)
	out[prefix] = string(j)
}
