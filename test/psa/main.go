// kdi-k8s-check: the Kubernetes project's own code applied to rendered manifests, offline.
//
// Reads a YAML stream on stdin and, for every Deployment, DaemonSet, StatefulSet, Job, Pod,
// ServiceAccount, Role and RoleBinding in it:
//   - decodes it strictly into the real Kubernetes Go types (sigs.k8s.io/yaml UnmarshalStrict, as
//     kubectl --validate=strict and the API server's strict field validation: unknown fields and
//     duplicate keys are errors);
//   - for the pod-bearing kinds, runs the Pod Security Admission evaluator
//     (k8s.io/pod-security-admission/policy, the code the admission controller runs) at the level
//     given as the first argument (default "restricted", latest version).
//
// Writes one JSON array to stdout: [{kind, name, strict: [errors], psa: [{reason, detail}]}].
// Built by test/helpers/k8s-check.ts with `go build` (modules from the Go module proxy), cached
// under ${KDI_CACHE_DIR:-~/.cache/kong-db-init}.
package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"regexp"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	psaapi "k8s.io/pod-security-admission/api"
	"k8s.io/pod-security-admission/policy"
	"sigs.k8s.io/yaml"
)

type finding struct {
	Reason string `json:"reason"`
	Detail string `json:"detail"`
}

type result struct {
	Kind   string    `json:"kind"`
	Name   string    `json:"name"`
	Strict []string  `json:"strict"`
	PSA    []finding `json:"psa"`
}

var separator = regexp.MustCompile(`(?m)^---[ \t]*(#.*)?\r?$`)

func main() {
	level := psaapi.LevelRestricted
	if len(os.Args) > 1 {
		l, err := psaapi.ParseLevel(os.Args[1])
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(2)
		}
		level = l
	}
	evaluator, err := policy.NewEvaluator(policy.DefaultChecks())
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	in, err := io.ReadAll(os.Stdin)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	out := []result{}
	for _, doc := range separator.Split(string(in), -1) {
		if len(bytes.TrimSpace([]byte(doc))) == 0 {
			continue
		}
		var head struct {
			Kind     string `json:"kind"`
			Metadata struct {
				Name string `json:"name"`
			} `json:"metadata"`
		}
		r := result{Strict: []string{}, PSA: []finding{}}
		if err := yaml.Unmarshal([]byte(doc), &head); err != nil {
			r.Strict = append(r.Strict, err.Error())
			out = append(out, r)
			continue
		}
		r.Kind, r.Name = head.Kind, head.Metadata.Name
		var meta *metav1.ObjectMeta
		var spec *corev1.PodSpec
		var obj interface{}
		switch head.Kind {
		case "Deployment":
			o := &appsv1.Deployment{}
			obj, meta, spec = o, &o.Spec.Template.ObjectMeta, &o.Spec.Template.Spec
		case "DaemonSet":
			o := &appsv1.DaemonSet{}
			obj, meta, spec = o, &o.Spec.Template.ObjectMeta, &o.Spec.Template.Spec
		case "StatefulSet":
			o := &appsv1.StatefulSet{}
			obj, meta, spec = o, &o.Spec.Template.ObjectMeta, &o.Spec.Template.Spec
		case "Job":
			o := &batchv1.Job{}
			obj, meta, spec = o, &o.Spec.Template.ObjectMeta, &o.Spec.Template.Spec
		case "Pod":
			o := &corev1.Pod{}
			obj, meta, spec = o, &o.ObjectMeta, &o.Spec
		case "ServiceAccount":
			obj = &corev1.ServiceAccount{}
		case "Role":
			obj = &rbacv1.Role{}
		case "RoleBinding":
			obj = &rbacv1.RoleBinding{}
		default:
			continue
		}
		if err := yaml.UnmarshalStrict([]byte(doc), obj); err != nil {
			r.Strict = append(r.Strict, err.Error())
		}
		if spec != nil {
			for _, c := range evaluator.EvaluatePod(psaapi.LevelVersion{Level: level, Version: psaapi.LatestVersion()}, meta, spec) {
				if !c.Allowed {
					r.PSA = append(r.PSA, finding{Reason: c.ForbiddenReason, Detail: c.ForbiddenDetail})
				}
			}
		}
		out = append(out, r)
	}
	enc := json.NewEncoder(os.Stdout)
	if err := enc.Encode(out); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
