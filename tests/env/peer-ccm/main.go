// peer-ccm: the benchmark's peer (docs/benchmarks.md). A minimal cloud controller manager on the
// Go framework, k8s.io/cloud-provider, at the version of our Kubernetes pin, with an in-process
// cloud that answers InstancesV2 after the same per-call latency the simulator injects
// (PEER_CLOUD_LATENCY_MS, default 50). Everything else (queues, workers, client QPS, patches) is
// the framework's, so bench node-init measures it in the same harness as ours.
package main

import (
	"context"
	"fmt"
	"hash/fnv"
	"io"
	"os"
	"strconv"
	"time"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	cloudprovider "k8s.io/cloud-provider"
	"k8s.io/cloud-provider/app"
	"k8s.io/cloud-provider/app/config"
	"k8s.io/cloud-provider/names"
	"k8s.io/cloud-provider/options"
	"k8s.io/component-base/cli"
	cliflag "k8s.io/component-base/cli/flag"
	_ "k8s.io/component-base/metrics/prometheus/clientgo"
	"k8s.io/klog/v2"
)

const providerName = "elemento-peer"

// peerCloud has only what node initialization and the node lifecycle use.
type peerCloud struct{ latency time.Duration }

func (c *peerCloud) Initialize(cloudprovider.ControllerClientBuilder, <-chan struct{}) {}
func (c *peerCloud) LoadBalancer() (cloudprovider.LoadBalancer, bool)             { return nil, false }
func (c *peerCloud) Instances() (cloudprovider.Instances, bool)                   { return nil, false }
func (c *peerCloud) InstancesV2() (cloudprovider.InstancesV2, bool)               { return c, true }
func (c *peerCloud) Zones() (cloudprovider.Zones, bool)                           { return nil, false }
func (c *peerCloud) Clusters() (cloudprovider.Clusters, bool)                     { return nil, false }
func (c *peerCloud) Routes() (cloudprovider.Routes, bool)                         { return nil, false }
func (c *peerCloud) ProviderName() string                                         { return providerName }
func (c *peerCloud) HasClusterID() bool                                           { return true }

// call stands for one cloud API round trip.
func (c *peerCloud) call(ctx context.Context) error {
	select {
	case <-time.After(c.latency):
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (c *peerCloud) InstanceExists(ctx context.Context, _ *v1.Node) (bool, error) {
	return true, c.call(ctx)
}

func (c *peerCloud) InstanceShutdown(ctx context.Context, _ *v1.Node) (bool, error) {
	return false, c.call(ctx)
}

// InstanceMetadata answers what our CCM writes for a bench Node: providerID, instance type,
// zone, region and one private address.
func (c *peerCloud) InstanceMetadata(ctx context.Context, node *v1.Node) (*cloudprovider.InstanceMetadata, error) {
	if err := c.call(ctx); err != nil {
		return nil, err
	}
	h := fnv.New32a()
	_, _ = h.Write([]byte(node.Name))
	n := h.Sum32()
	return &cloudprovider.InstanceMetadata{
		ProviderID:   "elemento://" + node.Name,
		InstanceType: "neon",
		NodeAddresses: []v1.NodeAddress{
			{Type: v1.NodeInternalIP, Address: fmt.Sprintf("10.%d.%d.%d", n>>16&0xff, n>>8&0xff, n&0xff)},
			{Type: v1.NodeHostName, Address: node.Name},
		},
		Zone:   "ovh",
		Region: "eu-west-par",
	}, nil
}

func main() {
	latency := 50 * time.Millisecond
	if v := os.Getenv("PEER_CLOUD_LATENCY_MS"); v != "" {
		ms, err := strconv.Atoi(v)
		if err != nil || ms < 0 {
			klog.Fatalf("PEER_CLOUD_LATENCY_MS %q: a number of milliseconds is required", v)
		}
		latency = time.Duration(ms) * time.Millisecond
	}
	cloudprovider.RegisterCloudProvider(providerName, func(io.Reader) (cloudprovider.Interface, error) {
		return &peerCloud{latency: latency}, nil
	})
	opts, err := options.NewCloudControllerManagerOptions()
	if err != nil {
		klog.Fatalf("options: %v", err)
	}
	initCloud := func(c *config.CompletedConfig) cloudprovider.Interface {
		cloud, err := cloudprovider.InitCloudProvider(c.ComponentConfig.KubeCloudShared.CloudProvider.Name, "")
		if err != nil || cloud == nil {
			klog.Fatalf("cloud provider %q: %v", c.ComponentConfig.KubeCloudShared.CloudProvider.Name, err)
		}
		return cloud
	}
	cmd := app.NewCloudControllerManagerCommand(opts, initCloud, app.DefaultInitFuncConstructors,
		names.CCMControllerAliases(), cliflag.NamedFlagSets{}, wait.NeverStop)
	os.Exit(cli.Run(cmd))
}
