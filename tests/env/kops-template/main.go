// kops-template renders a kOps addon template (.yaml.template) the way kOps does: Go's
// text/template, the cluster spec as data, and template functions of the same names and
// signatures as kOps's (upup/pkg/fi/cloudup/template_functions.go). Only the functions our
// templates are allowed to use are defined, so a template calling anything else fails to parse.
//
//	kops-template -cluster-name prod.example.com -region ovh -ccm-image IMAGE [-ha] FILE
package main

import (
	"flag"
	"fmt"
	"os"
	"text/template"
)

// CloudControllerManagerConfig stands in for kops.CloudControllerManagerConfig (the field used).
type CloudControllerManagerConfig struct {
	Image string
}

// ClusterSpec stands in for kops.ClusterSpec, the data kOps renders addon templates with.
type ClusterSpec struct {
	ExternalCloudControllerManager *CloudControllerManagerConfig
	KubernetesVersion              string
}

func main() {
	clusterName := flag.String("cluster-name", "", "the kOps cluster name (ClusterName)")
	region := flag.String("region", "", "the cluster's region (Region)")
	image := flag.String("ccm-image", "", "spec.externalCloudControllerManager.image")
	ha := flag.Bool("ha", false, "more than one control-plane node (ControlPlaneControllerReplicas)")
	version := flag.String("kubernetes-version", "1.36.1", "spec.kubernetesVersion")
	flag.Parse()
	if flag.NArg() != 1 || *clusterName == "" || *region == "" || *image == "" {
		fmt.Fprintln(os.Stderr, "usage: kops-template -cluster-name NAME -region REGION -ccm-image IMAGE [-ha] FILE")
		os.Exit(2)
	}
	funcs := template.FuncMap{
		"ClusterName": func() string { return *clusterName },
		"Region":      func() string { return *region },
		"ControlPlaneControllerReplicas": func(deployOnWorkersIfExternalPermissions bool) int {
			if *ha {
				return 2
			}
			return 1
		},
	}
	text, err := os.ReadFile(flag.Arg(0))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	t, err := template.New(flag.Arg(0)).Option("missingkey=error").Funcs(funcs).Parse(string(text))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	spec := ClusterSpec{
		ExternalCloudControllerManager: &CloudControllerManagerConfig{Image: *image},
		KubernetesVersion:              *version,
	}
	if err := t.Execute(os.Stdout, spec); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
