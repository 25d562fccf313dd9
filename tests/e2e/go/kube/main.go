// Command kube runs the upstream Kubernetes control-plane programs from one
// binary, so the test harness builds them once from pinned Go modules:
//
//	kube kube-apiserver [flags]
//	kube kube-controller-manager [flags]
//	kube kube-scheduler [flags]
//	kube kubectl [args]
//
// Invoked through a link named after one of the programs (kubectl -> kube),
// it runs that program directly.
package main

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/spf13/cobra"
	"k8s.io/component-base/cli"
	kubectl "k8s.io/kubectl/pkg/cmd"
	apiserver "k8s.io/kubernetes/cmd/kube-apiserver/app"
	controllermanager "k8s.io/kubernetes/cmd/kube-controller-manager/app"
	scheduler "k8s.io/kubernetes/cmd/kube-scheduler/app"
)

func main() {
	program, args := filepath.Base(os.Args[0]), os.Args[1:]
	if !known(program) {
		if len(args) == 0 || !known(args[0]) {
			fmt.Fprintln(os.Stderr, "usage: kube kube-apiserver|kube-controller-manager|kube-scheduler|kubectl [args]")
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
	}
	command.SetArgs(args)
	os.Exit(cli.Run(command))
}

func known(program string) bool {
	switch program {
	case "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubectl":
		return true
	}
	return false
}
