// olm-validate checks an OLM bundle directory with the operator-framework validation library
// (the rules `operator-sdk bundle validate` applies) and, unlike upstream's operator-verify,
// fails: it prints every finding and exits 1 on any error or on any warning not allowed with
// --allow.
//
//	olm-validate [--k8s-version 1.33] [--allow SUBSTRING]... BUNDLE_DIR
//
// Output, one finding per line: `<level>\t<validator>\t<object>\t<message>`, where level is
// error, warning or allowed; then a summary line.
package main

import (
	"flag"
	"fmt"
	"os"
	"strings"

	"github.com/operator-framework/api/pkg/manifests"
	"github.com/operator-framework/api/pkg/validation"
	"github.com/operator-framework/api/pkg/validation/errors"
	interfaces "github.com/operator-framework/api/pkg/validation/interfaces"
)

type allowList []string

func (a *allowList) String() string     { return strings.Join(*a, ", ") }
func (a *allowList) Set(v string) error { *a = append(*a, v); return nil }

// suites are run one by one so each finding names the suite that raised it.
var suites = []struct {
	name      string
	validator interfaces.Validator
}{
	{"csv", validation.ClusterServiceVersionValidator},
	{"crd", validation.CustomResourceDefinitionValidator},
	{"bundle", validation.BundleValidator},
	{"operatorhub-v2", validation.OperatorHubV2Validator},
	{"standard-capabilities", validation.StandardCapabilitiesValidator},
	{"standard-categories", validation.StandardCategoriesValidator},
	{"good-practices", validation.GoodPracticesValidator},
	{"deprecated-apis", validation.AlphaDeprecatedAPIsValidator},
	{"objects", validation.ObjectValidator},
}

func main() {
	var allowed allowList
	k8sVersion := flag.String("k8s-version", "", "Kubernetes version the removed-API checks target")
	flag.Var(&allowed, "allow", "a warning containing this text does not fail the run (repeatable)")
	flag.Parse()
	if flag.NArg() != 1 {
		fmt.Fprintln(os.Stderr, "usage: olm-validate [--k8s-version X.Y] [--allow TEXT]... BUNDLE_DIR")
		os.Exit(2)
	}

	bundle, err := manifests.GetBundleFromDir(flag.Arg(0))
	if err != nil {
		fmt.Printf("error\tload\t%s\t%s\n", flag.Arg(0), oneLine(err.Error()))
		fmt.Println("olm-validate: the bundle does not load")
		os.Exit(1)
	}
	fmt.Printf("olm-validate: bundle %s, package %q, channels %q (default %q), %d objects\n",
		bundle.Name, bundle.Package, bundle.Channels, bundle.DefaultChannel, len(bundle.Objects))

	objects := bundle.ObjectsToValidate()
	if *k8sVersion != "" {
		objects = append(objects, map[string]string{"k8s-version": *k8sVersion})
	}

	used := make([]bool, len(allowed))
	var errorCount, warningCount, allowedCount int
	for _, suite := range suites {
		for _, result := range suite.validator.Validate(objects...) {
			for _, e := range result.Errors {
				errorCount++
				report("error", suite.name, result.Name, e)
			}
			for _, w := range result.Warnings {
				level := "warning"
				for i, text := range allowed {
					if strings.Contains(w.Error(), text) {
						level, used[i] = "allowed", true
					}
				}
				if level == "allowed" {
					allowedCount++
				} else {
					warningCount++
				}
				report(level, suite.name, result.Name, w)
			}
		}
		fmt.Printf("suite\t%s\tdone\n", suite.name)
	}

	stale := 0
	for i, text := range allowed {
		if !used[i] {
			stale++
			fmt.Printf("error\tallow-list\t-\t--allow %q matched no warning: remove it\n", text)
		}
	}
	fmt.Printf("olm-validate: %d errors, %d warnings, %d allowed warnings, %d stale allowances\n",
		errorCount, warningCount, allowedCount, stale)
	if errorCount+warningCount+stale > 0 {
		os.Exit(1)
	}
}

func report(level, suite, object string, e errors.Error) {
	fmt.Printf("%s\t%s\t%s\t%s\n", level, suite, object, oneLine(e.Error()))
}

func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}
