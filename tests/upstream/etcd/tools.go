//go:build tools

// Package tools pins the etcd server command (go.etcd.io/etcd/server/v3 is
// itself the main package) for hack/build-upstream.sh. It is never compiled.
package tools

import (
	_ "go.etcd.io/etcd/server/v3"
)
