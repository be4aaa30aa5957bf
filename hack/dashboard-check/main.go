// dashboard-check: checks Grafana dashboard JSON files against the dashboard
// schema, with the Grafana Foundation SDK's generated types (Apache-2.0; no
// Grafana code, which is AGPL): strict unmarshalling (an unknown or mistyped
// field is an error), the schema's constraints (Validate), and a Prometheus
// query on every panel target. Prints one line per panel expression, so a
// test can run each through a real Prometheus (tests/monitoring_rules.rs).
//
// Usage: go run ./hack/dashboard-check FILE.json...
package main

import (
	"encoding/json"
	"fmt"
	"os"

	"github.com/grafana/grafana-foundation-sdk/go/cog"
	"github.com/grafana/grafana-foundation-sdk/go/cog/plugins"
	"github.com/grafana/grafana-foundation-sdk/go/dashboard"
	"github.com/grafana/grafana-foundation-sdk/go/prometheus"
)

func main() {
	plugins.RegisterDefaultPlugins()
	failed := false
	for _, path := range os.Args[1:] {
		if err := check(path); err != nil {
			fmt.Fprintf(os.Stderr, "%s: %v\n", path, err)
			failed = true
		}
	}
	if failed || len(os.Args) < 2 {
		os.Exit(1)
	}
}

// real: the SDK returns its error list as an error even when it is empty
// (a typed nil); only a non-empty list is an error.
func real(err error) error {
	if errs, ok := err.(cog.BuildErrors); ok && len(errs) == 0 {
		return nil
	}
	return err
}

func check(path string) error {
	raw, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	var d dashboard.Dashboard
	if err := real(d.UnmarshalJSONStrict(raw)); err != nil {
		return fmt.Errorf("does not match the dashboard schema: %w", err)
	}
	if err := real(d.Validate()); err != nil {
		return fmt.Errorf("fails the dashboard schema's constraints: %w", err)
	}
	// The SDK's disjunction (panel or row) drops a panel whose own strict
	// unmarshalling returned its empty error list, so each panel is
	// checked here on its own (rows are not used by this dashboard).
	var doc struct {
		Panels []json.RawMessage `json:"panels"`
	}
	if err := json.Unmarshal(raw, &doc); err != nil {
		return err
	}
	if len(doc.Panels) == 0 {
		return fmt.Errorf("no panels")
	}
	for i, rawPanel := range doc.Panels {
		var panel dashboard.Panel
		if err := real(panel.UnmarshalJSONStrict(rawPanel)); err != nil {
			return fmt.Errorf("panels[%d] does not match the panel schema: %w", i, err)
		}
		if err := real(panel.Validate()); err != nil {
			return fmt.Errorf("panels[%d] fails the panel schema's constraints: %w", i, err)
		}
		title := ""
		if panel.Title != nil {
			title = *panel.Title
		}
		// Targets too: each against the Prometheus query schema.
		var targets struct {
			Targets []json.RawMessage `json:"targets"`
		}
		if err := json.Unmarshal(rawPanel, &targets); err != nil {
			return err
		}
		if len(targets.Targets) == 0 {
			return fmt.Errorf("panel %q has no query", title)
		}
		for _, rawTarget := range targets.Targets {
			var q prometheus.Dataquery
			if err := real(q.UnmarshalJSONStrict(rawTarget)); err != nil {
				return fmt.Errorf("panel %q: a target that is not a Prometheus query: %w", title, err)
			}
			if q.Expr == "" {
				return fmt.Errorf("panel %q: a target without expr", title)
			}
			fmt.Printf("%s\t%s\n", title, q.Expr)
		}
	}
	return nil
}
