package main

import (
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
)

// envName is the environment variable bound to a flag: --foo-bar <-> FOO_BAR.
func envName(flagName string) string {
	return strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

// parseSettings parses args into fs, then fills every flag not given on the
// command line from its environment variable: flags win over the environment.
func parseSettings(fs *flag.FlagSet, args []string, lookup func(string) (string, bool)) error {
	if err := fs.Parse(args); err != nil {
		return err
	}
	given := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { given[f.Name] = true })
	var err error
	fs.VisitAll(func(f *flag.Flag) {
		if err != nil || given[f.Name] {
			return
		}
		v, ok := lookup(envName(f.Name))
		if !ok {
			return
		}
		if e := fs.Set(f.Name, v); e != nil {
			err = fmt.Errorf("invalid %s %q: %v", envName(f.Name), v, e)
		}
	})
	return err
}

// printSettings lists every setting with its environment variable and default.
func printSettings(w io.Writer, fs *flag.FlagSet) {
	fs.VisitAll(func(f *flag.Flag) {
		def := f.DefValue
		if def == "" {
			def = `""`
		}
		fmt.Fprintf(w, "  --%s, %s (default %s)\n      %s\n", f.Name, envName(f.Name), def, f.Usage)
	})
}

func lookupEnv(k string) (string, bool) { return os.LookupEnv(k) }
