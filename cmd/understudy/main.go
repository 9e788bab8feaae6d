// Command understudy is a gateway that keeps a web service's client
// connections alive across the failure of its server: every client segment
// reaches a primary and a backup server, and when the primary fails the
// backup's stream continues the same TCP connection.
//
// Usage:
//
//	understudy run --client-iface IF --server-iface IF --vip IP --port N[,N...] --primary IP --backup IP
//	understudy run --config FILE [flags overriding it]
//	understudy check --config FILE [flags]
//	understudy status [--json] [--control PATH]
//	understudy flows [--json] [--control PATH]
//	understudy failover [--to backup|primary] [--control PATH]
//	understudy drain [--undo] [--control PATH] primary|backup
package main

import (
	"errors"
	"fmt"
	"io"
	"os"
)

const defaultControl = "/run/understudy.sock"

// usageError marks a mistake in the command line: exit status 2.
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

func usagef(format string, a ...any) error { return usageError{fmt.Sprintf(format, a...)} }

const usage = `usage:
  understudy run --client-iface IF --server-iface IF --vip IPv4 --port N[,N...] --primary IPv4 --backup IPv4
                 [--control PATH] [--probe-interval 10ms] [--probe-misses 3] [--probe-rise 3] [--probe-http PATH]
                 [--metrics ADDR] [--log-format text|json] [--pcap FILE [--pcap-max-bytes 100M] [--pcap-keep 4]]
                 [--max-half-open 65536]
  understudy run --config FILE [flags overriding the file]
  understudy check [--config FILE] [flags]    validate the configuration without starting
  understudy status [--json] [--control PATH]
  understudy flows [--json] [--control PATH]
  understudy failover [--to backup|primary] [--control PATH]
  understudy drain [--undo] [--control PATH] primary|backup    new flows avoid the server; --undo returns it
  understudy undrain [--control PATH] primary|backup           same as drain --undo
run 'understudy COMMAND --help' for a command's flags`

func main() {
	os.Exit(runMain(os.Args[1:], os.Stdout, os.Stderr))
}

func runMain(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprintln(stderr, usage)
		return 2
	}
	var err error
	switch args[0] {
	case "run":
		err = cmdRun(args[1:], stderr)
	case "check":
		err = cmdCheck(args[1:], stdout, stderr)
	case "status":
		err = cmdStatus(args[1:], stdout)
	case "flows":
		err = cmdFlows(args[1:], stdout)
	case "failover":
		err = cmdFailover(args[1:], stdout)
	case "drain", "undrain":
		err = cmdDrain(args[0], args[1:], stdout)
	case "help", "-h", "--help":
		fmt.Fprintln(stdout, usage)
		return 0
	default:
		err = usagef("unknown command %q\n%s", args[0], usage)
	}
	if err == nil {
		return 0
	}
	fmt.Fprintf(stderr, "understudy: %v\n", err)
	var ue usageError
	if errors.As(err, &ue) {
		return 2
	}
	return 1
}
