// Command etcd runs the upstream etcd server (etcdmain) at the version pinned
// in go.mod, for the Tiqzy test harness.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
