// Package flagext holds flag.Value types shared by the config structs.
package flagext

import (
	"strings"
)

// StringSlice is a flag holding a comma-separated list; blanks are dropped.
type StringSlice []string

// String implements flag.Value.
func (s *StringSlice) String() string { return strings.Join(*s, ",") }

// Set implements flag.Value: it replaces the list with the items of v.
func (s *StringSlice) Set(v string) error {
	*s = SplitList(v)
	return nil
}

// SplitList splits v at commas and whitespace and drops empty items.
func SplitList(v string) []string {
	f := strings.FieldsFunc(v, func(r rune) bool { return r == ',' || r == ' ' || r == '\t' || r == '\n' })
	if len(f) == 0 {
		return nil
	}
	return f
}
