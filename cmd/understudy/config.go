package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"regexp"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// fileConfig is the YAML configuration file of `understudy run --config`.
// Scalars are read as strings so that every bad value is reported by
// validation, naming its key, rather than by the YAML decoder.
type fileConfig struct {
	ClientIface string          `yaml:"client_iface"`
	ServerIface string          `yaml:"server_iface"`
	Services    []serviceConfig `yaml:"services"`
	Primary     string          `yaml:"primary"`
	Backup      string          `yaml:"backup"`
	Control     string          `yaml:"control"`
	LogFormat   string          `yaml:"log_format"`
	Metrics     string          `yaml:"metrics"`
	Pcap        string          `yaml:"pcap"`
	PcapMax     string          `yaml:"pcap_max_bytes"`
	PcapKeep    string          `yaml:"pcap_keep"`
	Probe       probeConfig     `yaml:"probe"`
	MaxHalfOpen string          `yaml:"max_half_open"`
	// KeepOffloads is "true" or "false" (--keep-offloads).
	KeepOffloads string `yaml:"keep_offloads"`
}

type serviceConfig struct {
	VIP  string `yaml:"vip"`
	Port string `yaml:"port"`
}

type probeConfig struct {
	Interval string `yaml:"interval"`
	Timeout  string `yaml:"timeout"`
	Misses   string `yaml:"misses"`
	Rise     string `yaml:"rise"`
	HTTP     string `yaml:"http"`
	BusyFor  string `yaml:"busy_for"`
}

// allowedKeys names the keys each section of the file accepts, for the
// message about an unknown one.
var allowedKeys = map[string]string{
	"fileConfig":    "client_iface, server_iface, services, primary, backup, control, log_format, metrics, pcap, pcap_max_bytes, pcap_keep, probe, max_half_open, keep_offloads",
	"serviceConfig": "vip, port",
	"probeConfig":   "interval, timeout, misses, rise, http, busy_for",
}

var (
	unknownKeyRE = regexp.MustCompile(`field (\S+) not found in type main\.(\w+)`)
	badTypeRE    = regexp.MustCompile("cannot unmarshal !!(\\w+)(?: `([^`]*)`)? into (\\[\\])?(?:main\\.)?(\\w+)")
	typeNames    = map[string]string{"fileConfig": "a mapping of keys", "serviceConfig": "a mapping with vip and port",
		"probeConfig": "a mapping of probe settings", "string": "a single value"}
	tagNames = map[string]string{"seq": "a list", "map": "a mapping"}
)

// loadConfigFile reads and decodes a configuration file. Unknown keys are
// errors. The errors are single lines that name the file.
func loadConfigFile(path string) (*fileConfig, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config %s: %w", path, errors.Unwrap(err))
	}
	var fc fileConfig
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	// An empty file decodes to io.EOF: every key absent, which validation
	// reports key by key.
	if err := dec.Decode(&fc); err != nil && !errors.Is(err, io.EOF) {
		return nil, usagef("config %s: %s", path, yamlError(err))
	}
	// Settings after a "---" would be ignored without a word.
	var more yaml.Node
	if err := dec.Decode(&more); !errors.Is(err, io.EOF) {
		return nil, usagef("config %s: more than one YAML document (a line \"---\" starts another): put every setting in one", path)
	}
	return &fc, nil
}

// yamlError turns the decoder's message into one line in the file's terms.
func yamlError(err error) string {
	var te *yaml.TypeError
	if !errors.As(err, &te) {
		return strings.ReplaceAll(err.Error(), "\n", " ")
	}
	msgs := make([]string, 0, len(te.Errors))
	for _, m := range te.Errors {
		if s := unknownKeyRE.FindStringSubmatch(m); s != nil {
			m = strings.Replace(m, s[0], fmt.Sprintf("unknown key %q (allowed here: %s)", s[1], allowedKeys[s[2]]), 1)
		} else if s := badTypeRE.FindStringSubmatch(m); s != nil {
			what := typeNames[s[4]]
			if what == "" {
				what = "a " + s[4]
			}
			if s[3] != "" {
				what = "a list (each " + what + ")"
			}
			got := tagNames[s[1]]
			if got == "" {
				got = "the value " + strconv.Quote(s[2])
			}
			m = strings.Replace(m, s[0], fmt.Sprintf("found %s where %s belongs", got, what), 1)
		}
		msgs = append(msgs, m)
	}
	return strings.Join(msgs, "; ")
}

// fileDuration parses a duration from the file, naming its key.
func fileDuration(key, s string) (time.Duration, error) {
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, usagef("%s %q: use a duration with a unit (example: 10ms)", key, s)
	}
	return d, nil
}

// fileInt parses a count from the file, naming its key.
func fileInt(key, s string) (int, error) {
	n, err := strconv.Atoi(strings.TrimSpace(s))
	if err != nil {
		return 0, usagef("%s %q: use a whole number", key, s)
	}
	return n, nil
}

// parseSize reads a byte count: a whole number with an optional K, M or G
// (powers of 1024), as in 100M.
func parseSize(s string) (int64, bool) {
	s = strings.TrimSpace(s)
	mult := int64(1)
	if n := len(s); n > 0 {
		switch s[n-1] {
		case 'k', 'K':
			mult = 1 << 10
		case 'm', 'M':
			mult = 1 << 20
		case 'g', 'G':
			mult = 1 << 30
		}
		if mult > 1 {
			s = s[:n-1]
		}
	}
	v, err := strconv.ParseInt(s, 10, 64)
	if err != nil || v < 0 || v > (1<<50)/mult {
		return 0, false
	}
	return v * mult, true
}
