// CoreDNS as the harness's real node runs it: the upstream server with only the plugins its
// Corefile names (and the few that make it operable). Upstream's own main links every plugin,
// among them the AWS, Azure, Google Cloud, etcd and Datadog clients, which made the first
// build take half an hour here; this one links none of them.
package main

import (
	_ "github.com/coredns/caddy/onevent"
	"github.com/coredns/coredns/coremain"
	_ "github.com/coredns/coredns/plugin/cache"
	_ "github.com/coredns/coredns/plugin/errors"
	_ "github.com/coredns/coredns/plugin/health"
	_ "github.com/coredns/coredns/plugin/kubernetes"
	_ "github.com/coredns/coredns/plugin/log"
	_ "github.com/coredns/coredns/plugin/ready"
	_ "github.com/coredns/coredns/plugin/reload"
)

func main() {
	coremain.Run()
}
