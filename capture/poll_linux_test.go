package capture

import (
	"errors"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestAfterPoll: a poll the kernel could not make for want of memory, or
// an interrupted one, is a wait that ended early; anything else is the
// loop's error.
func TestAfterPoll(t *testing.T) {
	tests := []struct {
		err     error
		wantErr bool
	}{
		{nil, false},
		{unix.EINTR, false},
		{unix.ENOMEM, false},
		{unix.EAGAIN, false},
		{unix.EBADF, true},
		{unix.EINVAL, true},
	}
	for _, tc := range tests {
		t.Run(errName(tc.err), func(t *testing.T) {
			start := time.Now()
			err := afterPoll(tc.err, 5*time.Millisecond)
			if (err != nil) != tc.wantErr || tc.wantErr && !errors.Is(err, tc.err) {
				t.Fatalf("afterPoll = %v, want error %v", err, tc.wantErr)
			}
			if took := time.Since(start); took > time.Second {
				t.Fatalf("afterPoll took %v", took)
			}
		})
	}
}

func errName(err error) string {
	if err == nil {
		return "none"
	}
	return err.Error()
}
