//go:build unix

package main

import "syscall"

func umaskRestrictive() int { return syscall.Umask(0o077) }

func umaskRestore(old int) { syscall.Umask(old) }
