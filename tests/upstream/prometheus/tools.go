//go:build tools

// Package tools pins the prometheus and promtool commands for
// hack/build-upstream.sh. It is never compiled.
package tools

import (
	_ "github.com/prometheus/prometheus/cmd/prometheus"
	_ "github.com/prometheus/prometheus/cmd/promtool"
)
