//go:build tools

// Package tools pins the alertmanager and amtool commands for
// hack/build-upstream.sh. It is never compiled.
package tools

import (
	_ "github.com/prometheus/alertmanager/cmd/alertmanager"
	_ "github.com/prometheus/alertmanager/cmd/amtool"
)
