package pcaptap

import (
	"encoding/binary"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// TestReusedFileMode: with Keep 0 a file already at the path is reused; it
// holds the clients' traffic, so it becomes root's only whatever its mode.
func TestReusedFileMode(t *testing.T) {
	path := filepath.Join(t.TempDir(), "gw.pcap")
	if err := os.WriteFile(path, []byte("old"), 0o644); err != nil {
		t.Fatal(err)
	}
	tap, err := Open(Config{Path: path, Keep: -1})
	if err != nil {
		t.Fatal(err)
	}
	f := frame(t, cliMAC, 40000, 100)
	tap.Frame(In, f, len(f))
	if err := tap.Close(); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("capture file mode %v, want 0600", fi.Mode().Perm())
	}
}

// wholeRecords counts a capture file's whole records and reports a cut
// one at its end.
func wholeRecords(t *testing.T, path string) (n int, cut bool) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	b = b[fileHeaderLen:]
	for len(b) >= recHeaderLen {
		l := int(binary.LittleEndian.Uint32(b[8:]))
		if len(b) < recHeaderLen+l {
			return n, true
		}
		b = b[recHeaderLen+l:]
		n++
	}
	return n, len(b) != 0
}

// TestWriteErrorRecovers: a disk full for a moment (here a file size
// limit) costs the frames buffered then, counted as dropped; the file keeps
// only whole records, the counters add up to what was handed in, and the
// capture resumes by itself once there is room.
func TestWriteErrorRecovers(t *testing.T) {
	path := filepath.Join(t.TempDir(), "gw.pcap")
	tap, err := Open(Config{Path: path, MaxBytes: 64 << 20, Keep: 1})
	if err != nil {
		t.Fatal(err)
	}
	var old syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_FSIZE, &old); err != nil {
		t.Fatal(err)
	}
	restore := func() {
		if err := syscall.Setrlimit(syscall.RLIMIT_FSIZE, &old); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(restore)
	if err := syscall.Setrlimit(syscall.RLIMIT_FSIZE, &syscall.Rlimit{Cur: 300000, Max: old.Max}); err != nil {
		t.Fatal(err)
	}
	f := frame(t, cliMAC, 40000, 1400)
	handed := 0
	for range 400 { // about 580 KB: the disk is full at 300 KB
		tap.Frame(In, f, len(f))
		handed++
	}
	time.Sleep(300 * time.Millisecond)
	restore()
	full := tap.Stats()
	if full.Errors == 0 {
		t.Fatal("no write failed: the test did not fill the disk")
	}
	for range 100 {
		tap.Frame(In, f, len(f))
		handed++
		time.Sleep(time.Millisecond)
	}
	time.Sleep(300 * time.Millisecond)
	if err := tap.Close(); err != nil {
		t.Fatal(err)
	}
	st := tap.Stats()
	n, cut := wholeRecords(t, path)
	t.Logf("while full: %+v; after: %+v; the file holds %d records", full, st, n)
	if st.Frames-full.Frames != 100 {
		t.Errorf("%d of the 100 frames after the disk had room again were written", st.Frames-full.Frames)
	}
	if int(st.Frames) != n || cut {
		t.Errorf("%d frames counted as written; the file holds %d whole records (one cut at its end: %v)", st.Frames, n, cut)
	}
	if int(st.Frames+st.Dropped) != handed {
		t.Errorf("frames %d + dropped %d, want the %d handed in", st.Frames, st.Dropped, handed)
	}
}
