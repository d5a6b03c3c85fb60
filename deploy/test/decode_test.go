package deploytest

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	kjson "sigs.k8s.io/json"
	"sigs.k8s.io/yaml"
)

// object is one decoded manifest document.
type object struct {
	Source     string // where it came from, for messages
	APIVersion string
	Kind       string
	Name       string
	Namespace  string
	Labels     map[string]string
	Obj        any // a pointer to the typed object
}

func (o object) String() string { return fmt.Sprintf("%s %s (%s)", o.Kind, o.Name, o.Source) }

// kinds maps apiVersion/kind to the Go type a document must decode into.
// Anything else in a rendered manifest is an error: a new kind needs a type
// (and checks) here first.
var kinds = map[string]func() any{
	"v1/Namespace":                            func() any { return &corev1.Namespace{} },
	"v1/ServiceAccount":                       func() any { return &corev1.ServiceAccount{} },
	"v1/Secret":                               func() any { return &corev1.Secret{} },
	"v1/ConfigMap":                            func() any { return &corev1.ConfigMap{} },
	"v1/Service":                              func() any { return &corev1.Service{} },
	"apps/v1/StatefulSet":                     func() any { return &appsv1.StatefulSet{} },
	"policy/v1/PodDisruptionBudget":           func() any { return &policyv1.PodDisruptionBudget{} },
	"networking.k8s.io/v1/NetworkPolicy":      func() any { return &networkingv1.NetworkPolicy{} },
	"networking.k8s.io/v1/Ingress":            func() any { return &networkingv1.Ingress{} },
	"autoscaling/v2/HorizontalPodAutoscaler":  func() any { return &autoscalingv2.HorizontalPodAutoscaler{} },
	"monitoring.coreos.com/v1/ServiceMonitor": func() any { return &ServiceMonitor{} },
	"gateway.networking.k8s.io/v1/HTTPRoute":  func() any { return &HTTPRoute{} },
}

// decodeStrict decodes one YAML document into obj the way the API server's
// strict field validation does: duplicate keys, unknown fields and fields
// in the wrong case are errors (encoding/json alone matches keys
// case-insensitively and ignores unknown ones).
func decodeStrict(doc []byte, obj any) error {
	j, err := yaml.YAMLToJSONStrict(doc)
	if err != nil {
		return err
	}
	strictErrs, err := kjson.UnmarshalStrict(j, obj, kjson.DisallowDuplicateFields, kjson.DisallowUnknownFields)
	if err != nil {
		return err
	}
	return errors.Join(strictErrs...)
}

// decodeManifests splits a multi-document YAML stream and decodes every
// document strictly into its registered type.
func decodeManifests(t *testing.T, source string, data []byte) []object {
	t.Helper()
	var objs []object
	r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(data)))
	for i := 0; ; i++ {
		doc, err := r.Read()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("%s: reading document %d: %v", source, i, err)
		}
		j, err := yaml.YAMLToJSONStrict(doc)
		if err != nil {
			t.Errorf("%s: document %d is not valid YAML: %v", source, i, err)
			continue
		}
		if s := strings.TrimSpace(string(j)); s == "null" || s == "" {
			continue // comments only
		}
		var tm metav1.TypeMeta
		if err := json.Unmarshal(j, &tm); err != nil {
			t.Errorf("%s: document %d: %v", source, i, err)
			continue
		}
		src := fmt.Sprintf("%s#%d", source, i)
		mk, ok := kinds[tm.APIVersion+"/"+tm.Kind]
		if !ok {
			t.Errorf("%s: unexpected kind %s/%s: add its type to kinds", src, tm.APIVersion, tm.Kind)
			continue
		}
		obj := mk()
		if err := decodeStrict(doc, obj); err != nil {
			t.Errorf("%s: %s does not decode strictly: %v", src, tm.Kind, err)
			continue
		}
		acc, err := meta.Accessor(obj)
		if err != nil {
			t.Fatalf("%s: %v", src, err)
		}
		objs = append(objs, object{
			Source: src, APIVersion: tm.APIVersion, Kind: tm.Kind,
			Name: acc.GetName(), Namespace: acc.GetNamespace(), Labels: acc.GetLabels(), Obj: obj,
		})
	}
	return objs
}

// ofKind returns the objects of one kind, typed.
func ofKind[T any](objs []object) []*T {
	var out []*T
	for _, o := range objs {
		if v, ok := o.Obj.(*T); ok {
			out = append(out, v)
		}
	}
	return out
}

// The CRDs the chart and manifests emit have no Go types this module depends
// on; these local types hold exactly the fields we emit (and a few that users
// may set through values), so strict decoding still catches typos.

// ServiceMonitor is monitoring.coreos.com/v1 ServiceMonitor (Prometheus Operator).
type ServiceMonitor struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata"`
	Spec              ServiceMonitorSpec `json:"spec"`
}

type ServiceMonitorSpec struct {
	JobLabel          string               `json:"jobLabel,omitempty"`
	Selector          metav1.LabelSelector `json:"selector"`
	NamespaceSelector *NamespaceSelector   `json:"namespaceSelector,omitempty"`
	Endpoints         []Endpoint           `json:"endpoints"`
}

type NamespaceSelector struct {
	Any        bool     `json:"any,omitempty"`
	MatchNames []string `json:"matchNames,omitempty"`
}

type Endpoint struct {
	Port              string          `json:"port,omitempty"`
	Path              string          `json:"path,omitempty"`
	Scheme            string          `json:"scheme,omitempty"`
	Interval          string          `json:"interval,omitempty"`
	ScrapeTimeout     string          `json:"scrapeTimeout,omitempty"`
	Relabelings       []RelabelConfig `json:"relabelings,omitempty"`
	MetricRelabelings []RelabelConfig `json:"metricRelabelings,omitempty"`
}

type RelabelConfig struct {
	SourceLabels []string `json:"sourceLabels,omitempty"`
	Separator    *string  `json:"separator,omitempty"`
	TargetLabel  string   `json:"targetLabel,omitempty"`
	Regex        string   `json:"regex,omitempty"`
	Modulus      uint64   `json:"modulus,omitempty"`
	Replacement  *string  `json:"replacement,omitempty"`
	Action       string   `json:"action,omitempty"`
}

// HTTPRoute is gateway.networking.k8s.io/v1 HTTPRoute (Gateway API).
type HTTPRoute struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata"`
	Spec              HTTPRouteSpec `json:"spec"`
}

type HTTPRouteSpec struct {
	ParentRefs []ParentReference `json:"parentRefs"`
	Hostnames  []string          `json:"hostnames,omitempty"`
	Rules      []HTTPRouteRule   `json:"rules"`
}

type ParentReference struct {
	Group       *string `json:"group,omitempty"`
	Kind        *string `json:"kind,omitempty"`
	Namespace   *string `json:"namespace,omitempty"`
	Name        string  `json:"name"`
	SectionName *string `json:"sectionName,omitempty"`
	Port        *int32  `json:"port,omitempty"`
}

type HTTPRouteRule struct {
	Matches     []HTTPRouteMatch  `json:"matches,omitempty"`
	BackendRefs []HTTPBackendRef  `json:"backendRefs,omitempty"`
	Timeouts    *HTTPRouteTimeout `json:"timeouts,omitempty"`
}

type HTTPRouteMatch struct {
	Path *HTTPPathMatch `json:"path,omitempty"`
}

type HTTPPathMatch struct {
	Type  string `json:"type"`
	Value string `json:"value"`
}

type HTTPBackendRef struct {
	Group     *string `json:"group,omitempty"`
	Kind      *string `json:"kind,omitempty"`
	Namespace *string `json:"namespace,omitempty"`
	Name      string  `json:"name"`
	Port      *int32  `json:"port,omitempty"`
	Weight    *int32  `json:"weight,omitempty"`
}

type HTTPRouteTimeout struct {
	Request        *string `json:"request,omitempty"`
	BackendRequest *string `json:"backendRequest,omitempty"`
}

func TestDecodeStrictRejects(t *testing.T) {
	for name, doc := range map[string]string{
		"unknown field":    "apiVersion: v1\nkind: Service\nmetadata: {name: x}\nspec: {clusterIp: None}\n",
		"wrong case":       "apiVersion: v1\nkind: Service\nmetadata: {name: x}\nspec: {ClusterIP: None}\n",
		"duplicate key":    "apiVersion: v1\nkind: Service\nmetadata: {name: x}\nspec: {type: ClusterIP, type: None}\n",
		"wrong type":       "apiVersion: v1\nkind: Service\nmetadata: {name: x}\nspec: {publishNotReadyAddresses: \"yes\"}\n",
		"crd typo":         "apiVersion: monitoring.coreos.com/v1\nkind: ServiceMonitor\nmetadata: {name: x}\nspec: {selector: {}, endpoints: [{port: http, intervall: 30s}]}\n",
		"label not string": "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x, labels: {a: 1}}\n",
		"unknown in meta":  "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x, label: {a: b}}\n",
	} {
		var obj any = &corev1.Service{}
		if strings.Contains(doc, "ServiceMonitor") {
			obj = &ServiceMonitor{}
		} else if strings.Contains(doc, "ConfigMap") {
			obj = &corev1.ConfigMap{}
		}
		if err := decodeStrict([]byte(doc), obj); err == nil {
			t.Errorf("%s: decoded without error:\n%s", name, doc)
		}
	}
}
