// Command kube runs the upstream Kubernetes control-plane programs from one
// binary, so the test harness builds them once from pinned Go modules:
//
//	kube kube-apiserver [flags]
//	kube kube-controller-manager [flags]
//	kube kube-scheduler [flags]
//	kube kubectl [args]
//	kube kubelet [flags]
//	kube kube-proxy [flags]
//
// Invoked through a link named after one of the programs (kubectl -> kube),
// it runs that program directly. The kubelet and kube-proxy only run when a
// test asks for a real node (see tests/e2e/src/node.rs).
package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"github.com/spf13/cobra"
	"k8s.io/component-base/cli"
	kubectl "k8s.io/kubectl/pkg/cmd"
	apiserver "k8s.io/kubernetes/cmd/kube-apiserver/app"
	controllermanager "k8s.io/kubernetes/cmd/kube-controller-manager/app"
	scheduler "k8s.io/kubernetes/cmd/kube-scheduler/app"
	proxy "k8s.io/kubernetes/cmd/kube-proxy/app"
	kubelet "k8s.io/kubernetes/cmd/kubelet/app"
)

func main() {
	program, args := filepath.Base(os.Args[0]), os.Args[1:]
	if !known(program) {
		if len(args) == 0 || !known(args[0]) {
			fmt.Fprintln(os.Stderr, "usage: kube kube-apiserver|kube-controller-manager|kube-scheduler|kubectl|kubelet|kube-proxy [args]")
			os.Exit(2)
		}
		program, args = args[0], args[1:]
	}
	var command *cobra.Command
	switch program {
	case "kube-apiserver":
		command = apiserver.NewAPIServerCommand()
	case "kube-controller-manager":
		command = controllermanager.NewControllerManagerCommand()
	case "kube-scheduler":
		command = scheduler.NewSchedulerCommand()
	case "kubectl":
		command = kubectl.NewDefaultKubectlCommand()
	case "kubelet":
		command = kubelet.NewKubeletCommand(context.Background())
	case "kube-proxy":
		command = proxy.NewProxyCommand()
	}
	command.SetArgs(args)
	os.Exit(cli.Run(command))
}

func known(program string) bool {
	switch program {
	case "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubectl", "kubelet", "kube-proxy":
		return true
	}
	return false
}
