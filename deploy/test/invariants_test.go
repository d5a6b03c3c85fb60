package deploytest

import (
	"encoding/base64"
	"fmt"
	"net"
	"net/url"
	"path"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/validation"
)

const (
	gossipPort    = 7946
	httpPort      = 3000
	grpcPort      = 8080
	internalPort  = 9090 // INTERNAL_PORT: metrics, /cluster, the calls between nodes, pprof
	clusterDomain = "cluster.local"
	// The node's default NOTIFY_DRAIN_TIMEOUT.
	defaultDrain = 20 * time.Second
)

// secretEnv are the settings that carry credentials: never inline.
// SECRET_KEY_BASE is the Elixir service's name, which the node also reads.
var secretEnv = []string{"REDIS_URL", "REDIS_PASSWORD", "REDIS_SENTINEL_PASSWORD", "NOTIFY_JWT_SECRET", "NOTIFY_API_KEY", "NOTIFY_GOSSIP_KEY", "NOTIFY_PHOENIX_SECRET_KEY_BASE", "SECRET_KEY_BASE"}

// secretRef is a Secret name and key.
type secretRef struct{ Name, Key string }

// expectations are what a rendering must show beyond the invariants that
// hold for every one.
type expectations struct {
	// Namespace the objects are deployed to (helm's -n, kustomize's namespace).
	Namespace string
	// Credentials that must come from Secrets the rendering does not contain
	// (existingSecret values, or the Secret deploy/k8s references by name).
	External map[string]secretRef
	// No Secret object may be rendered at all.
	NoSecretObject bool
	// Kinds that must be present, with their counts.
	Kinds map[string]int
	// Replicas wanted (nil when an HPA owns them).
	Replicas *int32
	// Redis configured (REDIS_URL set).
	Redis bool
	// gRPC listener on.
	GRPC bool
	// Default topology spread (hostname and zone) expected.
	Spread bool
}

// deployment is the rendered set with its key objects found.
type deployment struct {
	objs      []object
	sts       *appsv1.StatefulSet
	pod       *corev1.PodSpec
	podLabels labels.Set
	container *corev1.Container
	env       map[string]corev1.EnvVar
	headless  *corev1.Service
	client    *corev1.Service
}

// checkDeployment asserts every invariant of a notify deployment and returns
// its key objects for case-specific checks.
func checkDeployment(t *testing.T, objs []object, exp expectations) *deployment {
	t.Helper()
	d := &deployment{objs: objs}

	checkKinds(t, objs, exp.Kinds)
	checkNamesAndLabels(t, objs)

	// The StatefulSet and its pods.
	stss := ofKind[appsv1.StatefulSet](objs)
	if len(stss) != 1 {
		t.Fatalf("want exactly one StatefulSet, got %d", len(stss))
	}
	d.sts = stss[0]
	d.pod = &d.sts.Spec.Template.Spec
	d.podLabels = labels.Set(d.sts.Spec.Template.Labels)
	if d.sts.Spec.PodManagementPolicy != appsv1.ParallelPodManagement {
		t.Errorf("StatefulSet podManagementPolicy = %q, want Parallel", d.sts.Spec.PodManagementPolicy)
	}
	mustSelectPods(t, "StatefulSet selector", d.sts.Spec.Selector, d.podLabels)
	switch {
	case exp.Replicas == nil && d.sts.Spec.Replicas != nil:
		t.Errorf("StatefulSet sets replicas (%d) although an HPA owns them", *d.sts.Spec.Replicas)
	case exp.Replicas != nil && (d.sts.Spec.Replicas == nil || *d.sts.Spec.Replicas != *exp.Replicas):
		t.Errorf("StatefulSet replicas = %v, want %d", d.sts.Spec.Replicas, *exp.Replicas)
	}
	if len(d.pod.Containers) != 1 {
		t.Fatalf("want one container, got %d", len(d.pod.Containers))
	}
	d.container = &d.pod.Containers[0]
	c := d.container
	if c.Image == "" || strings.HasSuffix(c.Image, ":latest") || !strings.ContainsAny(c.Image, ":@") {
		t.Errorf("image %q: want a pinned tag or digest", c.Image)
	}
	for _, p := range c.Ports {
		if p.Name != "" {
			if errs := validation.IsValidPortName(p.Name); len(errs) > 0 {
				t.Errorf("container port name %q: %v", p.Name, errs)
			}
		}
	}
	d.env = map[string]corev1.EnvVar{}
	for _, e := range c.Env {
		if _, dup := d.env[e.Name]; dup {
			t.Errorf("env %s is set twice", e.Name)
		}
		d.env[e.Name] = e
	}

	d.checkServices(t, exp)
	d.checkInternalPort(t, exp)
	d.checkEnv(t, exp)
	d.checkProbesAndShutdown(t)
	d.checkSecrets(t, exp)
	d.checkSecurity(t)
	d.checkScheduling(t, exp)
	d.checkPublicKeys(t)
	d.checkPDBs(t)
	d.checkNetworkPolicies(t, exp)
	d.checkServiceMonitors(t)
	d.checkHPAs(t, exp)
	d.checkIngresses(t)
	d.checkHTTPRoutes(t)
	d.checkServiceAccount(t)
	return d
}

func checkKinds(t *testing.T, objs []object, want map[string]int) {
	t.Helper()
	got := map[string]int{}
	for _, o := range objs {
		got[o.Kind]++
	}
	if want != nil && !mapsEqual(got, want) {
		t.Errorf("kinds rendered = %v, want %v", got, want)
	}
	seen := map[string]bool{}
	for _, o := range objs {
		k := o.Kind + "/" + o.Name
		if seen[k] {
			t.Errorf("%s rendered twice", k)
		}
		seen[k] = true
	}
}

func mapsEqual(a, b map[string]int) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

// checkNamesAndLabels applies the API server's name and label rules.
func checkNamesAndLabels(t *testing.T, objs []object) {
	t.Helper()
	for _, o := range objs {
		var errs []string
		switch o.Kind {
		case "Service", "Namespace":
			errs = validation.IsDNS1123Label(o.Name)
		default:
			errs = validation.IsDNS1123Subdomain(o.Name)
		}
		if len(errs) > 0 {
			t.Errorf("%s: name: %v", o, errs)
		}
		for k, v := range o.Labels {
			if errs := validation.IsQualifiedName(k); len(errs) > 0 {
				t.Errorf("%s: label key %q: %v", o, k, errs)
			}
			if errs := validation.IsValidLabelValue(v); len(errs) > 0 {
				t.Errorf("%s: label %s value %q: %v", o, k, v, errs)
			}
		}
		if o.Labels["app.kubernetes.io/name"] == "" {
			t.Errorf("%s: no app.kubernetes.io/name label", o)
		}
	}
}

// mustSelectPods fails unless sel is non-empty and matches the pod labels.
func mustSelectPods(t *testing.T, what string, sel *metav1.LabelSelector, pod labels.Set) {
	t.Helper()
	if sel == nil || (len(sel.MatchLabels) == 0 && len(sel.MatchExpressions) == 0) {
		t.Errorf("%s is empty: it would select every pod", what)
		return
	}
	s, err := metav1.LabelSelectorAsSelector(sel)
	if err != nil {
		t.Errorf("%s: %v", what, err)
		return
	}
	if !s.Matches(pod) {
		t.Errorf("%s %v does not match the pod labels %v", what, s, pod)
	}
}

// containerPort resolves a Service targetPort or probe port to the
// container's port.
func (d *deployment) containerPort(p intstr.IntOrString, proto corev1.Protocol) (corev1.ContainerPort, bool) {
	for _, cp := range d.container.Ports {
		cpProto := cp.Protocol
		if cpProto == "" {
			cpProto = corev1.ProtocolTCP
		}
		if proto == "" {
			proto = corev1.ProtocolTCP
		}
		if cpProto != proto {
			continue
		}
		if (p.Type == intstr.String && cp.Name == p.StrVal) || (p.Type == intstr.Int && cp.ContainerPort == p.IntVal) {
			return cp, true
		}
	}
	return corev1.ContainerPort{}, false
}

func (d *deployment) checkServices(t *testing.T, exp expectations) {
	t.Helper()
	var clients []*corev1.Service
	for _, svc := range ofKind[corev1.Service](d.objs) {
		mustSelectPods(t, "Service "+svc.Name+" selector", &metav1.LabelSelector{MatchLabels: svc.Spec.Selector}, d.podLabels)
		for _, p := range svc.Spec.Ports {
			target := p.TargetPort
			if target.Type == intstr.Int && target.IntVal == 0 {
				target = intstr.FromInt32(p.Port)
			}
			if _, ok := d.containerPort(target, p.Protocol); !ok {
				t.Errorf("Service %s port %s (%d/%s): targetPort %s is no container port", svc.Name, p.Name, p.Port, p.Protocol, target.String())
			}
		}
		if svc.Name == d.sts.Spec.ServiceName {
			d.headless = svc
		} else if slices.ContainsFunc(svc.Spec.Ports, func(p corev1.ServicePort) bool { return p.Name == "http" }) {
			clients = append(clients, svc)
		}
	}

	h := d.headless
	if h == nil {
		t.Fatalf("no Service named %q (the StatefulSet's serviceName)", d.sts.Spec.ServiceName)
	}
	if h.Spec.ClusterIP != corev1.ClusterIPNone {
		t.Errorf("gossip Service %s: clusterIP = %q, want None (headless)", h.Name, h.Spec.ClusterIP)
	}
	if !h.Spec.PublishNotReadyAddresses {
		t.Errorf("gossip Service %s: publishNotReadyAddresses must be true (nodes join before they are ready)", h.Name)
	}
	for _, proto := range []corev1.Protocol{corev1.ProtocolTCP, corev1.ProtocolUDP} {
		ok := false
		for _, p := range h.Spec.Ports {
			if p.Port == gossipPort && p.Protocol == proto {
				cp, found := d.containerPort(orPort(p.TargetPort, p.Port), proto)
				ok = found && cp.ContainerPort == gossipPort
			}
		}
		if !ok {
			t.Errorf("gossip Service %s: no port %d/%s reaching container port %d/%s", h.Name, gossipPort, proto, gossipPort, proto)
		}
	}
	for _, proto := range []corev1.Protocol{corev1.ProtocolTCP, corev1.ProtocolUDP} {
		if _, ok := d.containerPort(intstr.FromInt32(gossipPort), proto); !ok {
			t.Errorf("container has no port %d/%s", gossipPort, proto)
		}
	}

	if len(clients) != 1 {
		t.Fatalf("want one client Service (with an http port), got %d", len(clients))
	}
	d.client = clients[0]
	if d.client.Spec.ClusterIP == corev1.ClusterIPNone {
		t.Errorf("client Service %s is headless", d.client.Name)
	}
	if cp, ok := d.containerPort(intstr.FromString("http"), corev1.ProtocolTCP); !ok || cp.ContainerPort != httpPort {
		t.Errorf("container port http = %v, want %d", cp.ContainerPort, httpPort)
	}
	hasGRPC := slices.ContainsFunc(d.client.Spec.Ports, func(p corev1.ServicePort) bool { return p.Name == "grpc" })
	if hasGRPC != exp.GRPC {
		t.Errorf("client Service grpc port present = %v, want %v", hasGRPC, exp.GRPC)
	}
	if cp, ok := d.containerPort(intstr.FromString("grpc"), corev1.ProtocolTCP); ok != exp.GRPC || (ok && cp.ContainerPort != grpcPort) {
		t.Errorf("container grpc port = %v (present %v), want %d present %v", cp.ContainerPort, ok, grpcPort, exp.GRPC)
	}
}

// checkInternalPort: the node serves metrics, /cluster and the calls between
// nodes on INTERNAL_PORT, the container port internal; the headless Service
// carries it (for the ServiceMonitor), the client Service never does.
func (d *deployment) checkInternalPort(t *testing.T, exp expectations) {
	t.Helper()
	cp, ok := d.containerPort(intstr.FromString("internal"), corev1.ProtocolTCP)
	if !ok || cp.ContainerPort != internalPort {
		t.Errorf("container port internal = %v (present %v), want %d", cp.ContainerPort, ok, internalPort)
	}
	v, set := d.envValue("INTERNAL_PORT", exp.Namespace)
	if !set || d.env["INTERNAL_PORT"].ValueFrom != nil || portOf(v) != fmt.Sprint(internalPort) {
		t.Errorf("INTERNAL_PORT = %q (set %v), want port %d (the internal container port): else metrics and /cluster are on the client port", v, set, internalPort)
	}
	if target, ok := d.serviceTarget(d.headless, "internal"); !ok || target.ContainerPort != internalPort {
		t.Errorf("headless Service %s: no port internal reaching container port %d", d.headless.Name, internalPort)
	}
	for _, p := range d.client.Spec.Ports {
		if target, ok := d.containerPort(orPort(p.TargetPort, p.Port), p.Protocol); ok && target.ContainerPort == internalPort {
			t.Errorf("client Service %s port %s reaches the internal port %d: clients must reach PORT only", d.client.Name, p.Name, internalPort)
		}
	}
}

// serviceTarget is the container port svc's port named name reaches.
func (d *deployment) serviceTarget(svc *corev1.Service, name string) (corev1.ContainerPort, bool) {
	for _, p := range svc.Spec.Ports {
		if p.Name == name {
			return d.containerPort(orPort(p.TargetPort, p.Port), p.Protocol)
		}
	}
	return corev1.ContainerPort{}, false
}

func orPort(target intstr.IntOrString, port int32) intstr.IntOrString {
	if target.Type == intstr.Int && target.IntVal == 0 {
		return intstr.FromInt32(port)
	}
	return target
}

var envRef = regexp.MustCompile(`\$\(([A-Za-z_][A-Za-z0-9_]*)\)`)

// expandEnv resolves $(VAR) references in env[i]'s value the way the kubelet
// does: to variables defined earlier in the list (literal values, and the
// pod name and namespace from the downward API).
func expandEnv(env []corev1.EnvVar, i int, namespace, podName string) string {
	vals := map[string]string{}
	for _, e := range env[:i] {
		switch {
		case e.ValueFrom == nil:
			vals[e.Name] = envRef.ReplaceAllStringFunc(e.Value, func(m string) string {
				if v, ok := vals[m[2:len(m)-1]]; ok {
					return v
				}
				return m
			})
		case e.ValueFrom.FieldRef != nil && e.ValueFrom.FieldRef.FieldPath == "metadata.namespace":
			vals[e.Name] = namespace
		case e.ValueFrom.FieldRef != nil && e.ValueFrom.FieldRef.FieldPath == "metadata.name":
			vals[e.Name] = podName
		}
	}
	return envRef.ReplaceAllStringFunc(env[i].Value, func(m string) string {
		if v, ok := vals[m[2:len(m)-1]]; ok {
			return v
		}
		return m
	})
}

// envValue is the expanded literal value of a setting, and whether it is set.
func (d *deployment) envValue(name, namespace string) (string, bool) {
	for i, e := range d.container.Env {
		if e.Name == name {
			if e.ValueFrom != nil {
				return "", true
			}
			return expandEnv(d.container.Env, i, namespace, d.sts.Name+"-0"), true
		}
	}
	return "", false
}

// portOf is the port of a listen address: ":3000", "0.0.0.0:3000" or "3000".
func portOf(addr string) string {
	if _, p, err := net.SplitHostPort(addr); err == nil {
		return p
	}
	return addr
}

func (d *deployment) checkEnv(t *testing.T, exp expectations) {
	t.Helper()
	fieldRef := func(name, path string) {
		e, ok := d.env[name]
		if !ok || e.ValueFrom == nil || e.ValueFrom.FieldRef == nil || e.ValueFrom.FieldRef.FieldPath != path || e.Value != "" {
			t.Errorf("env %s must come from the downward API field %s, got %+v", name, path, e)
		}
	}
	fieldRef("NOTIFY_NODE_NAME", "metadata.name")
	fieldRef("NOTIFY_ADVERTISE_ADDR", "status.podIP")

	wantJoin := fmt.Sprintf("dns+%s.%s.svc.%s:%d", d.headless.Name, exp.Namespace, clusterDomain, gossipPort)
	if join, ok := d.envValue("NOTIFY_JOIN", exp.Namespace); join != wantJoin {
		t.Errorf("NOTIFY_JOIN = %q (set %v), want %q (the headless Service's DNS name)", join, ok, wantJoin)
	}
	if v, ok := d.envValue("NOTIFY_GOSSIP_ADDR", exp.Namespace); ok && portOf(v) != fmt.Sprint(gossipPort) {
		t.Errorf("NOTIFY_GOSSIP_ADDR = %q, want port %d", v, gossipPort)
	}
	if v, ok := d.envValue("PORT", exp.Namespace); ok && portOf(v) != fmt.Sprint(httpPort) {
		t.Errorf("PORT = %q, want port %d (the http container port)", v, httpPort)
	}
	grpc, ok := d.envValue("GRPC_PORT", exp.Namespace)
	switch {
	case !ok && !exp.GRPC:
		t.Errorf("GRPC_PORT unset: the node listens on :8080 by default, but no port is declared")
	case ok && exp.GRPC && portOf(grpc) != fmt.Sprint(grpcPort):
		t.Errorf("GRPC_PORT = %q, want port %d", grpc, grpcPort)
	case ok && !exp.GRPC && grpc != "off":
		t.Errorf("GRPC_PORT = %q, want off", grpc)
	}
	if v, ok := d.envValue("PPROF_PORT", exp.Namespace); ok && v != "off" && !strings.HasPrefix(v, "127.0.0.1:") && !strings.HasPrefix(v, "localhost:") {
		t.Errorf("PPROF_PORT = %q: pprof must stay on loopback (or off)", v)
	}
	d.checkTokenSettings(t, exp)
	d.checkRedisSettings(t, exp)
}

// checkRedisSettings: the Redis settings select one topology, complete, as
// the node wants (it refuses to start otherwise).
func (d *deployment) checkRedisSettings(t *testing.T, exp expectations) {
	t.Helper()
	set := func(name string) bool { _, ok := d.env[name]; return ok }
	var topologies []string
	if set("REDIS_URL") || set("PUBSUB_REDIS_ADDR") {
		topologies = append(topologies, "REDIS_URL/PUBSUB_REDIS_ADDR")
	}
	if set("REDIS_SENTINEL_ADDRS") || set("REDIS_SENTINEL_MASTER") {
		topologies = append(topologies, "REDIS_SENTINEL_ADDRS/REDIS_SENTINEL_MASTER")
	}
	if set("REDIS_CLUSTER_ADDRS") {
		topologies = append(topologies, "REDIS_CLUSTER_ADDRS")
	}
	if len(topologies) > 1 {
		t.Errorf("several Redis topologies set (%s): the node refuses to start", strings.Join(topologies, ", "))
	}
	if set("REDIS_SENTINEL_ADDRS") != set("REDIS_SENTINEL_MASTER") {
		t.Errorf("REDIS_SENTINEL_ADDRS and REDIS_SENTINEL_MASTER go together: the node refuses one alone")
	}
	if set("REDIS_SENTINEL_PASSWORD") && !set("REDIS_SENTINEL_ADDRS") {
		t.Errorf("REDIS_SENTINEL_PASSWORD set without REDIS_SENTINEL_ADDRS: the node refuses it")
	}
	if set("REDIS_USERNAME") && !set("REDIS_PASSWORD") {
		t.Errorf("REDIS_USERNAME set without REDIS_PASSWORD: the node refuses it")
	}
	if (set("REDIS_USERNAME") || set("REDIS_PASSWORD")) && set("REDIS_URL") {
		t.Errorf("REDIS_USERNAME/REDIS_PASSWORD set next to REDIS_URL: the URL carries the credentials")
	}
	for _, name := range []string{"REDIS_SENTINEL_ADDRS", "REDIS_CLUSTER_ADDRS"} {
		v, ok := d.envValue(name, exp.Namespace)
		if !ok {
			continue
		}
		if d.env[name].ValueFrom != nil {
			t.Errorf("%s is a reference: the chart and deploy/k8s set it literally", name)
			continue
		}
		for _, addr := range strings.Split(v, ",") {
			if host, port, err := net.SplitHostPort(addr); err != nil || host == "" || port == "" {
				t.Errorf("%s lists %q: not host:port", name, addr)
			}
		}
	}
	for _, name := range []string{"REDIS_SENTINEL_MASTER", "REDIS_USERNAME"} {
		if v, ok := d.envValue(name, exp.Namespace); ok && d.env[name].ValueFrom == nil && v == "" {
			t.Errorf("%s is set empty", name)
		}
	}
	if v, ok := d.envValue("NOTIFY_SUBSCRIBE_MODE", exp.Namespace); ok && d.env["NOTIFY_SUBSCRIBE_MODE"].ValueFrom == nil {
		redis := len(topologies) > 0
		_, cluster := d.envValue("REDIS_CLUSTER_ADDRS", exp.Namespace)
		switch {
		case v != "pattern" && v != "user" && v != "sharded":
			t.Errorf("NOTIFY_SUBSCRIBE_MODE = %q, want pattern, user or sharded", v)
		case v == "user" && !redis:
			t.Errorf("NOTIFY_SUBSCRIBE_MODE = user without Redis: the node refuses it")
		case v == "sharded" && !cluster:
			t.Errorf("NOTIFY_SUBSCRIBE_MODE = sharded without REDIS_CLUSTER_ADDRS: the node refuses it")
		}
	}
}

// checkTokenSettings: the literal token and API settings hold values the
// node accepts (it refuses to start otherwise).
func (d *deployment) checkTokenSettings(t *testing.T, exp expectations) {
	t.Helper()
	literal := func(name string) (string, bool) {
		v, ok := d.envValue(name, exp.Namespace)
		if ok && d.env[name].ValueFrom != nil {
			return "", false // from a reference: not checkable here
		}
		return v, ok
	}
	if v, ok := literal("NOTIFY_API_AUTH"); ok && v != "on" && v != "off" {
		t.Errorf("NOTIFY_API_AUTH = %q, want on or off", v)
	}
	if v, ok := literal("NOTIFY_EXPIRE_CONNECTIONS"); ok {
		if _, err := strconv.ParseBool(v); err != nil {
			t.Errorf("NOTIFY_EXPIRE_CONNECTIONS = %q: %v", v, err)
		}
	}
	for _, name := range []string{"NOTIFY_REFRESH_NOTICE", "NOTIFY_JWKS_REFRESH"} {
		v, ok := literal(name)
		if !ok {
			continue
		}
		dur, err := time.ParseDuration(v)
		switch {
		case err != nil:
			t.Errorf("%s = %q: %v", name, v, err)
		case dur < 0 || (dur == 0 && name == "NOTIFY_JWKS_REFRESH"):
			t.Errorf("%s = %q: out of range", name, v)
		}
	}
	if v, ok := literal("NOTIFY_JWKS_URL"); ok {
		for _, raw := range strings.Split(v, ",") {
			u, err := url.Parse(raw)
			if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
				t.Errorf("NOTIFY_JWKS_URL lists %q: not an absolute http(s) URL", raw)
			}
		}
	}
	if v, ok := literal("NOTIFY_PHOENIX_TOKEN_MAX_AGE"); ok {
		if n, err := strconv.Atoi(v); err != nil || n < 1 {
			t.Errorf("NOTIFY_PHOENIX_TOKEN_MAX_AGE = %q, want a positive number of seconds", v)
		}
	}
	_, phoenix := d.env["NOTIFY_PHOENIX_SECRET_KEY_BASE"]
	_, legacy := d.env["SECRET_KEY_BASE"]
	for _, name := range []string{"NOTIFY_PHOENIX_TOKEN_SALT", "NOTIFY_PHOENIX_TOKEN_MAX_AGE"} {
		if _, ok := d.env[name]; ok && !phoenix && !legacy {
			t.Errorf("%s set without NOTIFY_PHOENIX_SECRET_KEY_BASE: it has no effect", name)
		}
	}
}

func (d *deployment) drainTimeout(t *testing.T) time.Duration {
	t.Helper()
	v, ok := d.envValue("NOTIFY_DRAIN_TIMEOUT", "")
	if !ok {
		return defaultDrain
	}
	dur, err := time.ParseDuration(v)
	if err != nil {
		t.Errorf("NOTIFY_DRAIN_TIMEOUT = %q: %v", v, err)
	}
	return dur
}

func (d *deployment) checkProbesAndShutdown(t *testing.T) {
	t.Helper()
	c := d.container
	probe := func(kind string, p *corev1.Probe, path string) {
		if p == nil || p.HTTPGet == nil {
			t.Errorf("%s probe: want an HTTP GET of %s", kind, path)
			return
		}
		if p.HTTPGet.Path != path {
			t.Errorf("%s probe path = %q, want %q", kind, p.HTTPGet.Path, path)
		}
		if cp, ok := d.containerPort(p.HTTPGet.Port, corev1.ProtocolTCP); !ok || cp.ContainerPort != httpPort {
			t.Errorf("%s probe port %s is not the http port %d", kind, p.HTTPGet.Port.String(), httpPort)
		}
		if p.HTTPGet.Scheme != "" && p.HTTPGet.Scheme != corev1.URISchemeHTTP {
			t.Errorf("%s probe scheme = %s, want HTTP", kind, p.HTTPGet.Scheme)
		}
	}
	probe("liveness", c.LivenessProbe, "/healthz")
	probe("readiness", c.ReadinessProbe, "/readyz")

	if c.Lifecycle == nil || c.Lifecycle.PreStop == nil || c.Lifecycle.PreStop.Sleep == nil {
		t.Fatalf("want a preStop sleep action, got %+v", c.Lifecycle)
	}
	if c.Lifecycle.PreStop.Exec != nil {
		t.Errorf("preStop exec: the distroless image has no shell")
	}
	sleep := time.Duration(c.Lifecycle.PreStop.Sleep.Seconds) * time.Second
	if sleep <= 0 {
		t.Errorf("preStop sleep = %v, want > 0", sleep)
	}
	drain := d.drainTimeout(t)
	grace := d.pod.TerminationGracePeriodSeconds
	if grace == nil {
		t.Fatalf("terminationGracePeriodSeconds unset (default 30s)")
	}
	if g := time.Duration(*grace) * time.Second; g <= sleep+drain {
		t.Errorf("terminationGracePeriodSeconds = %v, want more than preStop %v + NOTIFY_DRAIN_TIMEOUT %v", g, sleep, drain)
	}
}

func (d *deployment) checkSecrets(t *testing.T, exp expectations) {
	t.Helper()
	rendered := map[string]*corev1.Secret{}
	for _, s := range ofKind[corev1.Secret](d.objs) {
		rendered[s.Name] = s
	}
	if exp.NoSecretObject && len(rendered) > 0 {
		t.Errorf("Secrets rendered although every credential names an existing Secret: %v", keys(rendered))
	}
	for _, name := range secretEnv {
		d.checkSecretEnv(t, exp, name, rendered)
	}
	for _, ef := range d.container.EnvFrom {
		if ef.SecretRef != nil {
			if _, ok := rendered[ef.SecretRef.Name]; ok {
				t.Errorf("envFrom a rendered Secret %s: credentials go through named env entries", ef.SecretRef.Name)
			}
		}
	}
}

// checkSecretEnv: the credential name is set unless it may be absent, and
// then only as a required secretKeyRef to the Secret exp names or to a
// rendered one holding a plausible value.
func (d *deployment) checkSecretEnv(t *testing.T, exp expectations, name string, rendered map[string]*corev1.Secret) {
	t.Helper()
	e, ok := d.env[name]
	if !ok {
		required := true
		switch name {
		case "REDIS_URL":
			required = exp.Redis // else the embedded broker
		case "NOTIFY_JWT_SECRET":
			// Else tokens are verified with public keys or JWK Sets only
			// (the node generates no secret then).
			_, keys := d.env["NOTIFY_JWT_PUBLIC_KEYS"]
			_, jwks := d.env["NOTIFY_JWKS_URL"]
			required = !keys && !jwks
		case "NOTIFY_PHOENIX_SECRET_KEY_BASE", "SECRET_KEY_BASE":
			required = false // Phoenix.Tokens are optional
		case "REDIS_PASSWORD", "REDIS_SENTINEL_PASSWORD":
			required = false // a URL carries its own; Redis may have none
		}
		if required {
			t.Errorf("env %s is not set", name)
		}
		return
	}
	if name == "REDIS_URL" && !exp.Redis {
		t.Errorf("REDIS_URL set, want the embedded broker")
	}
	if e.Value != "" || e.ValueFrom == nil || e.ValueFrom.SecretKeyRef == nil {
		t.Errorf("env %s must be a secretKeyRef, never inline: %+v", name, e)
		return
	}
	ref := e.ValueFrom.SecretKeyRef
	if ref.Optional != nil && *ref.Optional {
		t.Errorf("env %s: secretKeyRef is optional: a missing credential must stop the pod", name)
	}
	if want, ok := exp.External[name]; ok {
		if ref.Name != want.Name || ref.Key != want.Key {
			t.Errorf("env %s from Secret %s key %s, want %s key %s", name, ref.Name, ref.Key, want.Name, want.Key)
		}
		if _, ok := rendered[ref.Name]; ok {
			t.Errorf("env %s: existing Secret %s is rendered too", name, ref.Name)
		}
		return
	}
	s, ok := rendered[ref.Name]
	if !ok {
		t.Errorf("env %s reads Secret %s, which is neither rendered nor expected to exist", name, ref.Name)
		return
	}
	val, ok := secretValue(s, ref.Key)
	if !ok {
		t.Errorf("env %s reads key %s, which Secret %s does not have", name, ref.Key, s.Name)
		return
	}
	checkSecretValue(t, name, s.Name, val)
}

// checkSecretValue: the value of credential name, read from Secret secret,
// has its form.
func checkSecretValue(t *testing.T, name, secret, val string) {
	t.Helper()
	switch name {
	case "NOTIFY_GOSSIP_KEY":
		if k, err := base64.StdEncoding.DecodeString(val); err != nil || !slices.Contains([]int{16, 24, 32}, len(k)) {
			t.Errorf("gossip key in Secret %s is not base64 of 16, 24 or 32 bytes", secret)
		}
	case "REDIS_URL":
		if !strings.HasPrefix(val, "redis://") && !strings.HasPrefix(val, "rediss://") {
			t.Errorf("REDIS_URL in Secret %s is not a redis:// or rediss:// URL", secret)
		}
	case "REDIS_PASSWORD", "REDIS_SENTINEL_PASSWORD":
		if val == "" {
			t.Errorf("%s in Secret %s is empty", name, secret)
		}
	case "NOTIFY_PHOENIX_SECRET_KEY_BASE", "SECRET_KEY_BASE":
		if len(val) < 20 {
			t.Errorf("%s in Secret %s is shorter than 20 bytes (Phoenix.Token's minimum; the node refuses it)", name, secret)
		}
	default:
		if len(val) < 16 {
			t.Errorf("%s in Secret %s is shorter than 16 characters", name, secret)
		}
	}
}

func secretValue(s *corev1.Secret, key string) (string, bool) {
	if v, ok := s.StringData[key]; ok {
		return v, true
	}
	v, ok := s.Data[key]
	return string(v), ok
}

func keys[V any](m map[string]V) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// checkSecurity: what the "restricted" Pod Security Standard asks, and a
// read-only root filesystem.
func (d *deployment) checkSecurity(t *testing.T) {
	t.Helper()
	psc := d.pod.SecurityContext
	csc := d.container.SecurityContext
	if psc == nil {
		psc = &corev1.PodSecurityContext{}
	}
	if csc == nil {
		t.Fatalf("container has no securityContext")
	}
	nonRoot := csc.RunAsNonRoot
	if nonRoot == nil {
		nonRoot = psc.RunAsNonRoot
	}
	if nonRoot == nil || !*nonRoot {
		t.Errorf("runAsNonRoot must be true")
	}
	user := csc.RunAsUser
	if user == nil {
		user = psc.RunAsUser
	}
	if user != nil && *user == 0 {
		t.Errorf("runAsUser is 0")
	}
	if csc.ReadOnlyRootFilesystem == nil || !*csc.ReadOnlyRootFilesystem {
		t.Errorf("readOnlyRootFilesystem must be true")
	}
	if csc.AllowPrivilegeEscalation == nil || *csc.AllowPrivilegeEscalation {
		t.Errorf("allowPrivilegeEscalation must be false")
	}
	if csc.Privileged != nil && *csc.Privileged {
		t.Errorf("privileged container")
	}
	if csc.Capabilities == nil || !slices.Contains(csc.Capabilities.Drop, "ALL") || len(csc.Capabilities.Add) > 0 {
		t.Errorf("capabilities must drop ALL and add none, got %+v", csc.Capabilities)
	}
	seccomp := csc.SeccompProfile
	if seccomp == nil {
		seccomp = psc.SeccompProfile
	}
	if seccomp == nil || seccomp.Type != corev1.SeccompProfileTypeRuntimeDefault {
		t.Errorf("seccompProfile must be RuntimeDefault, got %+v", seccomp)
	}
	if d.pod.HostNetwork || d.pod.HostPID || d.pod.HostIPC {
		t.Errorf("pod uses host namespaces")
	}
	if d.pod.AutomountServiceAccountToken == nil || *d.pod.AutomountServiceAccountToken {
		t.Errorf("automountServiceAccountToken must be false: notify does not call the API")
	}
}

func (d *deployment) checkScheduling(t *testing.T, exp expectations) {
	t.Helper()
	tsc := d.pod.TopologySpreadConstraints
	topo := map[string]bool{}
	for _, c := range tsc {
		topo[c.TopologyKey] = true
		mustSelectPods(t, "topologySpreadConstraint "+c.TopologyKey+" labelSelector", c.LabelSelector, d.podLabels)
	}
	if exp.Spread && (!topo["kubernetes.io/hostname"] || !topo["topology.kubernetes.io/zone"]) {
		t.Errorf("want topology spread over kubernetes.io/hostname and topology.kubernetes.io/zone, got %v", keys(topo))
	}
}

// checkPublicKeys: every file in NOTIFY_JWT_PUBLIC_KEYS is mounted from a
// ConfigMap or Secret item of that name.
func (d *deployment) checkPublicKeys(t *testing.T) {
	t.Helper()
	v, ok := d.envValue("NOTIFY_JWT_PUBLIC_KEYS", "")
	if !ok {
		return
	}
	configMaps := map[string]*corev1.ConfigMap{}
	for _, cm := range ofKind[corev1.ConfigMap](d.objs) {
		configMaps[cm.Name] = cm
	}
	for _, file := range strings.Split(v, ",") {
		dir, base := path.Split(file)
		dir = strings.TrimSuffix(dir, "/")
		found := false
		for _, m := range d.container.VolumeMounts {
			if m.MountPath != dir {
				continue
			}
			if !m.ReadOnly {
				t.Errorf("key mount %s is writable", m.MountPath)
			}
			for _, vol := range d.pod.Volumes {
				if vol.Name != m.Name {
					continue
				}
				var items []corev1.KeyToPath
				switch {
				case vol.ConfigMap != nil:
					items = vol.ConfigMap.Items
					if cm, ok := configMaps[vol.ConfigMap.Name]; ok {
						if pem, ok := cm.Data[base]; !ok || !strings.HasPrefix(pem, "-----BEGIN ") {
							t.Errorf("ConfigMap %s has no PEM %s", cm.Name, base)
						}
					}
				case vol.Secret != nil:
					items = vol.Secret.Items
				}
				found = found || slices.ContainsFunc(items, func(k corev1.KeyToPath) bool { return k.Path == base })
			}
		}
		if !found {
			t.Errorf("NOTIFY_JWT_PUBLIC_KEYS lists %s, which no volume provides", file)
		}
	}
}

func (d *deployment) checkPDBs(t *testing.T) {
	t.Helper()
	for _, pdb := range ofKind[policyv1.PodDisruptionBudget](d.objs) {
		mustSelectPods(t, "PodDisruptionBudget "+pdb.Name+" selector", pdb.Spec.Selector, d.podLabels)
		if pdb.Spec.MaxUnavailable == nil || pdb.Spec.MinAvailable != nil {
			t.Errorf("PodDisruptionBudget %s: want maxUnavailable (and no minAvailable)", pdb.Name)
		} else if pdb.Spec.MaxUnavailable.String() != "1" {
			t.Errorf("PodDisruptionBudget %s: maxUnavailable = %s, want 1", pdb.Name, pdb.Spec.MaxUnavailable.String())
		}
	}
}

// checkNetworkPolicies: gossip only from this deployment's pods, the
// internal port from them and the monitoring only, and the client ports open
// (to the pods themselves at least: they relay).
func (d *deployment) checkNetworkPolicies(t *testing.T, exp expectations) {
	t.Helper()
	for _, np := range ofKind[networkingv1.NetworkPolicy](d.objs) {
		mustSelectPods(t, "NetworkPolicy "+np.Name+" podSelector", &np.Spec.PodSelector, d.podLabels)
		if !slices.Contains(np.Spec.PolicyTypes, networkingv1.PolicyTypeIngress) {
			t.Errorf("NetworkPolicy %s does not govern ingress", np.Name)
		}
		d.checkGossipIngress(t, np)
		d.checkInternalIngress(t, np)
		d.checkClientIngress(t, np, exp)
	}
}

// checkGossipIngress: np admits gossip over TCP and UDP between the pods,
// and from nothing else.
func (d *deployment) checkGossipIngress(t *testing.T, np *networkingv1.NetworkPolicy) {
	t.Helper()
	for _, proto := range []corev1.Protocol{corev1.ProtocolTCP, corev1.ProtocolUDP} {
		admitted := false
		for i, r := range np.Spec.Ingress {
			if !ingressOpens(r, gossipPort, "gossip-"+strings.ToLower(string(proto)), proto) {
				continue
			}
			admitted = true
			if len(r.From) == 0 {
				t.Errorf("NetworkPolicy %s rule %d opens gossip %d/%s to everyone", np.Name, i, gossipPort, proto)
			}
			for _, peer := range r.From {
				if !d.isOwnPods(peer) {
					t.Errorf("NetworkPolicy %s rule %d admits gossip %d/%s from %+v, not only this deployment's pods", np.Name, i, gossipPort, proto, peer)
				}
			}
		}
		if !admitted {
			t.Errorf("NetworkPolicy %s does not admit gossip %d/%s between the pods", np.Name, gossipPort, proto)
		}
	}
}

// checkInternalIngress: np admits the internal port from this deployment's
// pods (the calls between nodes), and else only from narrowed peers (the
// monitoring): never from everyone, an IP block or every namespace, nor by a
// rule that also opens the client port, whose peers are the clients.
func (d *deployment) checkInternalIngress(t *testing.T, np *networkingv1.NetworkPolicy) {
	t.Helper()
	fromPods := false
	for i, r := range np.Spec.Ingress {
		if !ingressOpens(r, internalPort, "internal", corev1.ProtocolTCP) {
			continue
		}
		if len(r.From) == 0 {
			t.Errorf("NetworkPolicy %s rule %d opens the internal port %d to everyone", np.Name, i, internalPort)
		}
		if ingressOpens(r, httpPort, "http", corev1.ProtocolTCP) {
			t.Errorf("NetworkPolicy %s rule %d opens the internal port with the client port: clients would reach /metrics, /cluster and pprof", np.Name, i)
		}
		for _, peer := range r.From {
			switch {
			case d.isOwnPods(peer):
				fromPods = true
			case !isNarrowPeer(peer):
				t.Errorf("NetworkPolicy %s rule %d admits the internal port from %+v: only this deployment's pods and selected monitoring pods or namespaces may reach it", np.Name, i, peer)
			}
		}
	}
	if !fromPods {
		t.Errorf("NetworkPolicy %s does not admit the internal port %d from the pods themselves: the calls between nodes (Presence) would fail", np.Name, internalPort)
	}
}

// isNarrowPeer: peer selects namespaces or pods by label; not an IP block,
// every namespace, or every pod of the namespace.
func isNarrowPeer(peer networkingv1.NetworkPolicyPeer) bool {
	empty := func(s *metav1.LabelSelector) bool {
		return s != nil && len(s.MatchLabels) == 0 && len(s.MatchExpressions) == 0
	}
	switch {
	case peer.IPBlock != nil, empty(peer.NamespaceSelector):
		return false
	case peer.NamespaceSelector == nil:
		return peer.PodSelector != nil && !empty(peer.PodSelector)
	}
	return true
}

// checkClientIngress: np admits the client ports (HTTP, and gRPC when exp
// has it) from anywhere or at least from the pods themselves.
func (d *deployment) checkClientIngress(t *testing.T, np *networkingv1.NetworkPolicy, exp expectations) {
	t.Helper()
	clientPorts := map[string]int32{"http": httpPort}
	if exp.GRPC {
		clientPorts["grpc"] = grpcPort
	}
	for name, port := range clientPorts {
		ok := false
		for _, r := range np.Spec.Ingress {
			if ingressOpens(r, port, name, corev1.ProtocolTCP) && (len(r.From) == 0 || slices.ContainsFunc(r.From, d.isOwnPods)) {
				ok = true
			}
		}
		if !ok {
			t.Errorf("NetworkPolicy %s does not admit %s (%d) from anywhere, nor from the pods themselves (relay)", np.Name, name, port)
		}
	}
}

// ingressOpens: rule r opens port, by number or by its name, over proto.
func ingressOpens(r networkingv1.NetworkPolicyIngressRule, port int32, name string, proto corev1.Protocol) bool {
	if len(r.Ports) == 0 {
		return true // every port
	}
	for _, p := range r.Ports {
		pp := corev1.ProtocolTCP
		if p.Protocol != nil {
			pp = *p.Protocol
		}
		if pp != proto {
			continue
		}
		if p.Port == nil || (p.Port.Type == intstr.Int && p.Port.IntVal == port) || (p.Port.Type == intstr.String && p.Port.StrVal == name) {
			return true
		}
		if p.EndPort != nil && p.Port.Type == intstr.Int && p.Port.IntVal <= port && port <= *p.EndPort {
			return true
		}
	}
	return false
}

// isOwnPods: peer is a pod selector alone, selecting this deployment's pods.
func (d *deployment) isOwnPods(peer networkingv1.NetworkPolicyPeer) bool {
	if peer.PodSelector == nil || peer.NamespaceSelector != nil || peer.IPBlock != nil {
		return false
	}
	s, err := metav1.LabelSelectorAsSelector(peer.PodSelector)
	return err == nil && !s.Empty() && s.Matches(d.podLabels)
}

// checkServiceMonitors: metrics are scraped on the internal port, through
// the headless Service that alone carries it (selecting the client Service
// too would scrape every pod twice).
func (d *deployment) checkServiceMonitors(t *testing.T) {
	t.Helper()
	h := d.headless
	for _, sm := range ofKind[ServiceMonitor](d.objs) {
		s, err := metav1.LabelSelectorAsSelector(&sm.Spec.Selector)
		if err != nil || s.Empty() {
			t.Errorf("ServiceMonitor %s: selector %v: %v", sm.Name, s, err)
			continue
		}
		if !s.Matches(labels.Set(h.Labels)) {
			t.Errorf("ServiceMonitor %s selector %v does not select the headless Service %s (labels %v), which carries the internal port", sm.Name, s, h.Name, h.Labels)
		}
		if s.Matches(labels.Set(d.client.Labels)) {
			t.Errorf("ServiceMonitor %s also selects the client Service %s: every pod would be scraped twice", sm.Name, d.client.Name)
		}
		if sm.Spec.JobLabel != "" && h.Labels[sm.Spec.JobLabel] != "notify" {
			t.Errorf("ServiceMonitor %s: job label %s = %q on the Service, want notify (rules.yaml and the dashboard use job=\"notify\")", sm.Name, sm.Spec.JobLabel, h.Labels[sm.Spec.JobLabel])
		}
		if len(sm.Spec.Endpoints) == 0 {
			t.Errorf("ServiceMonitor %s has no endpoints", sm.Name)
		}
		for _, ep := range sm.Spec.Endpoints {
			if target, ok := d.serviceTarget(h, ep.Port); !ok || target.ContainerPort != internalPort {
				t.Errorf("ServiceMonitor %s endpoint port %q: not a port of Service %s reaching the internal port %d (/metrics is there)", sm.Name, ep.Port, h.Name, internalPort)
			}
			if ep.Path != "/metrics" {
				t.Errorf("ServiceMonitor %s path = %q, want /metrics", sm.Name, ep.Path)
			}
			for _, dur := range []string{ep.Interval, ep.ScrapeTimeout} {
				if dur != "" {
					if _, err := time.ParseDuration(dur); err != nil {
						t.Errorf("ServiceMonitor %s: %v", sm.Name, err)
					}
				}
			}
		}
	}
}

func (d *deployment) checkHPAs(t *testing.T, exp expectations) {
	t.Helper()
	hpas := ofKind[autoscalingv2.HorizontalPodAutoscaler](d.objs)
	if len(hpas) > 0 && exp.Replicas != nil {
		t.Errorf("HPA rendered, but fixed replicas expected")
	}
	for _, hpa := range hpas {
		ref := hpa.Spec.ScaleTargetRef
		if ref.APIVersion != "apps/v1" || ref.Kind != "StatefulSet" || ref.Name != d.sts.Name {
			t.Errorf("HPA %s targets %s %s %s, want apps/v1 StatefulSet %s", hpa.Name, ref.APIVersion, ref.Kind, ref.Name, d.sts.Name)
		}
		if hpa.Spec.MinReplicas == nil || *hpa.Spec.MinReplicas < 1 || *hpa.Spec.MinReplicas > hpa.Spec.MaxReplicas {
			t.Errorf("HPA %s replicas %v..%d", hpa.Name, hpa.Spec.MinReplicas, hpa.Spec.MaxReplicas)
		}
		if len(hpa.Spec.Metrics) == 0 {
			t.Errorf("HPA %s has no metrics", hpa.Name)
		}
		for _, m := range hpa.Spec.Metrics {
			switch m.Type {
			case autoscalingv2.PodsMetricSourceType:
				if m.Pods == nil || m.Pods.Metric.Name != "notify_connections" || m.Pods.Target.Type != autoscalingv2.AverageValueMetricType || m.Pods.Target.AverageValue == nil {
					t.Errorf("HPA %s Pods metric: want notify_connections as an AverageValue, got %+v", hpa.Name, m.Pods)
				}
			case autoscalingv2.ResourceMetricSourceType:
				if m.Resource == nil || m.Resource.Name != corev1.ResourceCPU || m.Resource.Target.AverageUtilization == nil {
					t.Errorf("HPA %s Resource metric: want CPU utilisation, got %+v", hpa.Name, m.Resource)
				} else if _, ok := d.container.Resources.Requests[corev1.ResourceCPU]; !ok {
					t.Errorf("HPA %s scales on CPU utilisation but the container requests no CPU", hpa.Name)
				}
			default:
				t.Errorf("HPA %s: unexpected metric type %s", hpa.Name, m.Type)
			}
		}
	}
}

func (d *deployment) clientPort(n int32) bool {
	return slices.ContainsFunc(d.client.Spec.Ports, func(p corev1.ServicePort) bool { return p.Port == n && p.Name == "http" })
}

func (d *deployment) checkIngresses(t *testing.T) {
	t.Helper()
	for _, ing := range ofKind[networkingv1.Ingress](d.objs) {
		for _, r := range ing.Spec.Rules {
			if r.HTTP == nil {
				t.Errorf("Ingress %s rule %q has no http paths", ing.Name, r.Host)
				continue
			}
			for _, p := range r.HTTP.Paths {
				b := p.Backend.Service
				if b == nil || b.Name != d.client.Name || !d.clientPort(b.Port.Number) {
					t.Errorf("Ingress %s path %s: backend %+v, want Service %s's http port", ing.Name, p.Path, b, d.client.Name)
				}
			}
		}
		if _, ok := ing.Annotations["nginx.ingress.kubernetes.io/upstream-hash-by"]; ok {
			for _, a := range []string{"nginx.ingress.kubernetes.io/proxy-read-timeout", "nginx.ingress.kubernetes.io/proxy-send-timeout"} {
				if ing.Annotations[a] != "3600" {
					t.Errorf("Ingress %s: %s = %q, want 3600 (long-lived WebSockets)", ing.Name, a, ing.Annotations[a])
				}
			}
		}
	}
}

func (d *deployment) checkHTTPRoutes(t *testing.T) {
	t.Helper()
	for _, rt := range ofKind[HTTPRoute](d.objs) {
		if len(rt.Spec.ParentRefs) == 0 {
			t.Errorf("HTTPRoute %s attaches to no Gateway", rt.Name)
		}
		for _, r := range rt.Spec.Rules {
			for _, b := range r.BackendRefs {
				if b.Name != d.client.Name || b.Port == nil || !d.clientPort(*b.Port) || (b.Kind != nil && *b.Kind != "Service") {
					t.Errorf("HTTPRoute %s backend %+v, want Service %s's http port", rt.Name, b, d.client.Name)
				}
			}
		}
	}
}

func (d *deployment) checkServiceAccount(t *testing.T) {
	t.Helper()
	for _, sa := range ofKind[corev1.ServiceAccount](d.objs) {
		if sa.Name != d.pod.ServiceAccountName {
			t.Errorf("ServiceAccount %s rendered, but the pods use %q", sa.Name, d.pod.ServiceAccountName)
		}
		if sa.AutomountServiceAccountToken == nil || *sa.AutomountServiceAccountToken {
			t.Errorf("ServiceAccount %s: automountServiceAccountToken must be false", sa.Name)
		}
	}
}

// TestIsNarrowPeer: the peers the internal port may be opened to besides
// the pods themselves.
func TestIsNarrowPeer(t *testing.T) {
	sel := func(kv ...string) *metav1.LabelSelector {
		s := &metav1.LabelSelector{MatchLabels: map[string]string{}}
		for i := 0; i+1 < len(kv); i += 2 {
			s.MatchLabels[kv[i]] = kv[i+1]
		}
		return s
	}
	tests := []struct {
		name string
		peer networkingv1.NetworkPolicyPeer
		want bool
	}{
		{"a namespace", networkingv1.NetworkPolicyPeer{NamespaceSelector: sel("kubernetes.io/metadata.name", "monitoring")}, true},
		{"pods of a namespace", networkingv1.NetworkPolicyPeer{NamespaceSelector: sel("team", "obs"), PodSelector: sel("app", "prometheus")}, true},
		{"pods of this namespace", networkingv1.NetworkPolicyPeer{PodSelector: sel("app", "prometheus")}, true},
		{"every namespace", networkingv1.NetworkPolicyPeer{NamespaceSelector: sel()}, false},
		{"every pod of every namespace", networkingv1.NetworkPolicyPeer{NamespaceSelector: sel(), PodSelector: sel("app", "x")}, false},
		{"every pod of this namespace", networkingv1.NetworkPolicyPeer{PodSelector: sel()}, false},
		{"an IP block", networkingv1.NetworkPolicyPeer{IPBlock: &networkingv1.IPBlock{CIDR: "0.0.0.0/0"}}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := isNarrowPeer(tt.peer); got != tt.want {
				t.Errorf("isNarrowPeer(%+v) = %v, want %v", tt.peer, got, tt.want)
			}
		})
	}
}
