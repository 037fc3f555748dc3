// Command etcd is the upstream etcd server; etcd's own main module cannot be
// built from the module proxy (it uses local replace directives), so we call
// its entry point directly.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
