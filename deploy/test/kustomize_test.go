package deploytest

import (
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/api/types"
	"sigs.k8s.io/kustomize/kyaml/filesys"
	"sigs.k8s.io/yaml"
)

const k8sDir = "../k8s"

// buildKustomization runs `kustomize build deploy/k8s` in process.
func buildKustomization(t *testing.T) []object {
	t.Helper()
	m, err := krusty.MakeKustomizer(krusty.MakeDefaultOptions()).Run(filesys.MakeFsOnDisk(), k8sDir)
	if err != nil {
		t.Fatalf("kustomize build %s: %v", k8sDir, err)
	}
	out, err := m.AsYaml()
	if err != nil {
		t.Fatal(err)
	}
	return decodeManifests(t, "kustomize build", out)
}

// The Secret deploy/k8s reads; secret.example.yaml shows its keys.
var k8sSecrets = map[string]secretRef{
	"REDIS_URL":         {"notify", "redis-url"},
	"NOTIFY_JWT_SECRET": {"notify", "jwt-secret"},
	"NOTIFY_API_KEY":    {"notify", "api-key"},
	"NOTIFY_GOSSIP_KEY": {"notify", "gossip-key"},
}

func TestKustomize(t *testing.T) {
	objs := buildKustomization(t)
	d := checkDeployment(t, objs, expectations{
		Namespace: "notify",
		Kinds: map[string]int{"Namespace": 1, "ServiceAccount": 1, "Service": 2, "StatefulSet": 1,
			"PodDisruptionBudget": 1, "NetworkPolicy": 1, "ServiceMonitor": 1},
		Replicas: ptr[int32](3), Redis: true, GRPC: true, Spread: true,
		External: k8sSecrets, NoSecretObject: true,
	})
	for _, o := range objs {
		if o.Kind != "Namespace" && o.Namespace != "notify" {
			t.Errorf("%s: namespace %q, want notify", o, o.Namespace)
		}
	}
	ns := ofKind[corev1.Namespace](objs)[0]
	if ns.Labels["pod-security.kubernetes.io/enforce"] != "restricted" {
		t.Errorf("Namespace %s does not enforce the restricted Pod Security Standard", ns.Name)
	}
	if img := d.container.Image; img != "ghcr.io/notify-dev/notify:0.1.0" {
		t.Errorf("image = %s", img)
	}
	if got, _ := d.envValue("NOTIFY_CLUSTER_LABEL", "notify"); got != "notify.notify" {
		t.Errorf("NOTIFY_CLUSTER_LABEL = %q, want notify.notify", got)
	}
}

// TestKustomizeFiles: every manifest in deploy/k8s is either listed in
// kustomization.yaml or the Secret example, which decodes strictly and
// carries every key the StatefulSet reads.
func TestKustomizeFiles(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join(k8sDir, "kustomization.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var k types.Kustomization
	if err := yaml.UnmarshalStrict(raw, &k); err != nil {
		t.Fatalf("kustomization.yaml: %v", err)
	}
	files, _ := filepath.Glob(filepath.Join(k8sDir, "*.yaml"))
	for _, f := range files {
		base := filepath.Base(f)
		if base == "kustomization.yaml" || base == "secret.example.yaml" {
			continue
		}
		if !slices.Contains(k.Resources, base) {
			t.Errorf("%s is not listed in kustomization.yaml resources", base)
		}
	}
	if slices.Contains(k.Resources, "secret.example.yaml") {
		t.Errorf("secret.example.yaml is listed in resources: its placeholders would be applied")
	}

	raw, err = os.ReadFile(filepath.Join(k8sDir, "secret.example.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	objs := decodeManifests(t, "secret.example.yaml", raw)
	secrets := ofKind[corev1.Secret](objs)
	if len(objs) != 1 || len(secrets) != 1 {
		t.Fatalf("secret.example.yaml: want one Secret, got %v", objs)
	}
	s := secrets[0]
	for env, ref := range k8sSecrets {
		if s.Name != ref.Name {
			t.Errorf("example Secret is %s, the StatefulSet reads %s", s.Name, ref.Name)
		}
		if _, ok := secretValue(s, ref.Key); !ok {
			t.Errorf("example Secret lacks %s (for %s)", ref.Key, env)
		}
	}
	sts := ofKind[appsv1.StatefulSet](buildKustomization(t))[0]
	d := &deployment{objs: objs, sts: sts, pod: &sts.Spec.Template.Spec, container: &sts.Spec.Template.Spec.Containers[0]}
	d.env = map[string]corev1.EnvVar{}
	for _, e := range d.container.Env {
		d.env[e.Name] = e
	}
	// With the example applied, the values are well formed.
	d.checkSecrets(t, expectations{Redis: true})
}

// TestKustomizeMatchesChart: the plain manifests and the chart's defaults
// describe the same pods (same ports, probes, shutdown, security, spread,
// resources and settings), so fixing one without the other fails.
func TestKustomizeMatchesChart(t *testing.T) {
	k := ofKind[appsv1.StatefulSet](buildKustomization(t))[0]
	rel, err := renderChart("notify", "notify", kubeVersion, nil)
	if err != nil {
		t.Fatal(err)
	}
	h := ofKind[appsv1.StatefulSet](decodeManifests(t, "chart defaults", []byte(rel.Manifest)))[0]
	kp, hp := k.Spec.Template.Spec, h.Spec.Template.Spec
	kc, hc := kp.Containers[0], hp.Containers[0]
	same := func(what string, a, b any) {
		if !reflect.DeepEqual(a, b) {
			t.Errorf("%s differs:\n  deploy/k8s: %+v\n  chart:      %+v", what, a, b)
		}
	}
	same("replicas", k.Spec.Replicas, h.Spec.Replicas)
	same("podManagementPolicy", k.Spec.PodManagementPolicy, h.Spec.PodManagementPolicy)
	same("minReadySeconds", k.Spec.MinReadySeconds, h.Spec.MinReadySeconds)
	same("ports", kc.Ports, hc.Ports)
	same("args", kc.Args, hc.Args)
	same("liveness probe", kc.LivenessProbe, hc.LivenessProbe)
	same("readiness probe", kc.ReadinessProbe, hc.ReadinessProbe)
	same("lifecycle", kc.Lifecycle, hc.Lifecycle)
	same("terminationGracePeriodSeconds", kp.TerminationGracePeriodSeconds, hp.TerminationGracePeriodSeconds)
	same("container securityContext", kc.SecurityContext, hc.SecurityContext)
	same("pod securityContext", kp.SecurityContext, hp.SecurityContext)
	same("resources", kc.Resources, hc.Resources)
	same("topology keys", topologyKeys(kp.TopologySpreadConstraints), topologyKeys(hp.TopologySpreadConstraints))

	// Settings: the same variables, and the same values where they are literal
	// and do not name the release.
	kenv, henv := envMap(kc.Env), envMap(hc.Env)
	for name, e := range kenv {
		if name == "POD_NAMESPACE" {
			continue // only there to build NOTIFY_JOIN and NOTIFY_CLUSTER_LABEL
		}
		he, ok := henv[name]
		if !ok {
			t.Errorf("deploy/k8s sets %s, the chart does not", name)
			continue
		}
		if e.ValueFrom == nil && !strings.Contains(e.Value, "$(") && e.Value != he.Value {
			t.Errorf("%s: deploy/k8s %q, chart %q", name, e.Value, he.Value)
		}
		if (e.ValueFrom == nil) != (he.ValueFrom == nil) {
			t.Errorf("%s: literal in one, a reference in the other", name)
		}
	}
}

func envMap(env []corev1.EnvVar) map[string]corev1.EnvVar {
	m := map[string]corev1.EnvVar{}
	for _, e := range env {
		m[e.Name] = e
	}
	return m
}

func topologyKeys(c []corev1.TopologySpreadConstraint) []string {
	var out []string
	for _, x := range c {
		out = append(out, x.TopologyKey+"/"+string(x.WhenUnsatisfiable))
	}
	return out
}
