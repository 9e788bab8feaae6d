// Package pcaptap writes the frames a gateway receives and sends to a pcap
// file that tcpdump reads, without blocking or allocating on the datapath:
// each frame is copied into one of a fixed set of slots and written by a
// goroutine; when every slot is taken the frame is counted as dropped.
//
// Frames are stored as Linux cooked captures (LINKTYPE_LINUX_SLL), whose
// packet type says the direction: PACKET_HOST for a frame the gateway
// received, PACKET_OUTGOING for one it sent. `tcpdump -e -r FILE` prints
// In or Out on each line, and the filters `inbound` and `outbound` select
// one direction. The cooked header keeps the frame's source MAC address,
// which tells the gateway's interfaces apart.
//
// Files rotate by size: FILE is the newest, FILE.1 the one before, up to
// FILE.<Keep>; a file that exists at start is rotated too, so a restart
// keeps the capture of the run before it.
package pcaptap

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Defaults for zero Config fields.
const (
	DefaultMaxBytes = 100 << 20
	DefaultKeep     = 4
	DefaultSlots    = 4096
	DefaultSnapLen  = 2048
)

// Config sets where and how much is written. The zero value of each field
// but Path takes its default.
type Config struct {
	Path     string
	MaxBytes int64 // a file is rotated before it would grow past this
	Keep     int   // rotated files kept (FILE.1 … FILE.<Keep>); negative: none
	Slots    int   // frames buffered between the datapath and the writer
	SnapLen  int   // bytes kept of each frame's IP packet
}

func (c Config) withDefaults() Config {
	if c.MaxBytes <= 0 {
		c.MaxBytes = DefaultMaxBytes
	}
	if c.Keep == 0 {
		c.Keep = DefaultKeep
	}
	if c.Keep < 0 {
		c.Keep = 0
	}
	if c.Slots <= 0 {
		c.Slots = DefaultSlots
	}
	if c.SnapLen <= 0 {
		c.SnapLen = DefaultSnapLen
	}
	return c
}

// Dir is a frame's direction, as the cooked header's packet type.
type Dir uint16

const (
	In  Dir = 0 // PACKET_HOST: received by the gateway
	Out Dir = 4 // PACKET_OUTGOING: sent by the gateway
)

const (
	ethLen        = 14
	sllLen        = 16
	fileHeaderLen = 24
	recHeaderLen  = 16
	linkTypeSLL   = 113
)

type slot struct {
	ts   int64 // unix ns
	dir  Dir
	n    int // bytes of data used
	orig int // the IP packet's length on the wire
	mac  [6]byte
	eth  [2]byte
	data []byte
}

// Stats counts what the tap did.
type Stats struct {
	File      string `json:"file"`
	Frames    uint64 `json:"frames"`  // written
	Bytes     uint64 `json:"bytes"`   // written, headers included
	Dropped   uint64 `json:"dropped"` // not written: every slot taken, no file open, or a write failed
	Rotations uint64 `json:"rotations"`
	Errors    uint64 `json:"errors"` // failed writes, opens and renames
	LastError string `json:"last_error,omitempty"`
}

// Tap is an open capture.
type Tap struct {
	cfg   Config
	slots []slot
	free  chan int32
	full  chan int32
	stop  chan struct{}
	done  chan struct{}

	frames, bytes, dropped, rotations, errs atomic.Uint64
	errMu                                   sync.Mutex
	lastErr                                 string

	// Owned by the writer goroutine.
	f       *os.File
	w       *bufio.Writer
	size    int64 // the file's length once the buffer is written
	flushed int64 // its length as last written whole: records end there
	// Frames and bytes in the buffer, counted once they reach the file.
	pendFrames, pendBytes uint64
	rec                   [recHeaderLen + sllLen]byte
	lastTry               time.Time
	closed                sync.Once
}

// Open creates the capture file (rotating one already there) and starts
// the writer.
func Open(cfg Config) (*Tap, error) {
	if cfg.Path == "" {
		return nil, errors.New("pcaptap: no file given")
	}
	t := newTap(cfg)
	if _, err := os.Stat(cfg.Path); err == nil {
		if err := t.shift(); err != nil {
			return nil, err
		}
	}
	if err := t.create(); err != nil {
		return nil, err
	}
	go t.run()
	return t, nil
}

// newTap makes a Tap without a file or a writer, for tests.
func newTap(cfg Config) *Tap {
	cfg = cfg.withDefaults()
	t := &Tap{cfg: cfg, slots: make([]slot, cfg.Slots), free: make(chan int32, cfg.Slots),
		full: make(chan int32, cfg.Slots), stop: make(chan struct{}), done: make(chan struct{})}
	buf := make([]byte, cfg.Slots*cfg.SnapLen)
	for i := range t.slots {
		t.slots[i].data = buf[i*cfg.SnapLen : (i+1)*cfg.SnapLen : (i+1)*cfg.SnapLen]
		t.free <- int32(i)
	}
	return t
}

// Frame copies an Ethernet frame for writing. wireLen is the frame's
// length on the wire (at least len(frame)). It never blocks: with every
// slot taken the frame is dropped and counted. Safe from one goroutine at a
// time (the datapath's).
func (t *Tap) Frame(dir Dir, frame []byte, wireLen int) {
	if len(frame) < ethLen {
		return
	}
	var i int32
	select {
	case i = <-t.free:
	default:
		t.dropped.Add(1)
		return
	}
	s := &t.slots[i]
	s.ts = time.Now().UnixNano()
	s.dir = dir
	copy(s.mac[:], frame[6:12])
	copy(s.eth[:], frame[12:14])
	s.n = copy(s.data, frame[ethLen:])
	s.orig = max(wireLen, len(frame)) - ethLen
	t.full <- i // never blocks: there are as many places as slots
}

// Stats returns the counters; safe at any time.
func (t *Tap) Stats() Stats {
	t.errMu.Lock()
	last := t.lastErr
	t.errMu.Unlock()
	return Stats{File: t.cfg.Path, Frames: t.frames.Load(), Bytes: t.bytes.Load(), Dropped: t.dropped.Load(),
		Rotations: t.rotations.Load(), Errors: t.errs.Load(), LastError: last}
}

// Close writes what is buffered and closes the file. Frames handed in after
// Close are not written.
func (t *Tap) Close() error {
	t.closed.Do(func() { close(t.stop) })
	<-t.done
	if t.f == nil {
		return nil
	}
	err := t.flush()
	if cerr := t.f.Close(); err == nil {
		err = cerr
	}
	t.f = nil
	if err != nil {
		return fmt.Errorf("pcaptap: close %s: %w", t.cfg.Path, err)
	}
	return nil
}

func (t *Tap) run() {
	defer close(t.done)
	for {
		select {
		case i := <-t.full:
			t.write(i)
		case <-t.stop:
			for {
				select {
				case i := <-t.full:
					t.write(i)
				default:
					return
				}
			}
		}
		if len(t.full) == 0 && t.f != nil {
			// Idle: make what was written readable now (tcpdump -r on a
			// running capture).
			t.flush()
		}
	}
}

// write writes slot i's frame and returns the slot.
func (t *Tap) write(i int32) {
	defer func() { t.free <- i }()
	s := &t.slots[i]
	n := int64(recHeaderLen + sllLen + s.n)
	if t.f != nil && t.size+n > t.cfg.MaxBytes && t.size > fileHeaderLen {
		t.rotate()
	}
	if t.f == nil && time.Since(t.lastTry) > time.Second {
		// An earlier open failed (counted then): try again, at most once
		// a second.
		t.lastTry = time.Now()
		if err := t.create(); err != nil {
			t.fail(err)
		}
	}
	if t.f == nil {
		t.dropped.Add(1)
		return
	}
	r := t.rec[:]
	binary.LittleEndian.PutUint32(r[0:], uint32(s.ts/1e9))
	binary.LittleEndian.PutUint32(r[4:], uint32(s.ts%1e9/1e3))
	binary.LittleEndian.PutUint32(r[8:], uint32(sllLen+s.n))
	binary.LittleEndian.PutUint32(r[12:], uint32(sllLen+s.orig))
	h := r[recHeaderLen:]
	binary.BigEndian.PutUint16(h[0:], uint16(s.dir))
	binary.BigEndian.PutUint16(h[2:], 1) // ARPHRD_ETHER
	binary.BigEndian.PutUint16(h[4:], 6)
	copy(h[6:14], s.mac[:])
	h[12], h[13] = 0, 0
	copy(h[14:16], s.eth[:])
	// Flushed here rather than inside Write, so that a failure is known
	// to cost exactly the frames buffered since the last flush.
	if t.w.Available() < int(n) {
		if err := t.flush(); err != nil {
			t.dropped.Add(1)
			return
		}
	}
	t.w.Write(r) // into the buffer's free space: cannot fail
	t.w.Write(s.data[:s.n])
	t.size += n
	t.pendFrames++
	t.pendBytes += uint64(n)
}

// flush writes the buffer to the file and counts its frames as written. A
// write that fails (a full disk) costs the buffered frames, counted as
// dropped, and nothing more: the file is cut back to its last whole record
// and the capture goes on in it, so that it resumes by itself once there is
// room again.
func (t *Tap) flush() error {
	err := t.w.Flush()
	if err == nil {
		t.frames.Add(t.pendFrames)
		t.bytes.Add(t.pendBytes)
		t.pendFrames, t.pendBytes, t.flushed = 0, 0, t.size
		return nil
	}
	t.fail(err)
	t.dropped.Add(t.pendFrames)
	t.pendFrames, t.pendBytes, t.size = 0, 0, t.flushed
	t.w.Reset(t.f) // forgets the buffer, and the error with it
	if terr := t.f.Truncate(t.flushed); terr == nil {
		_, terr = t.f.Seek(t.flushed, io.SeekStart)
		if terr == nil {
			return err
		}
	}
	// The file cannot be cut back: start another within a second.
	t.f.Close()
	t.f = nil
	t.lastTry = time.Now()
	return err
}

// rotate closes the current file, shifts the old ones and starts a new one.
func (t *Tap) rotate() {
	if t.flush() != nil && t.f == nil {
		return // create is tried again within a second
	}
	if err := t.f.Close(); err != nil {
		t.fail(err)
	}
	t.f = nil
	if err := t.shift(); err != nil {
		t.fail(err)
	}
	t.lastTry = time.Now()
	if err := t.create(); err != nil {
		t.fail(err)
		return
	}
	t.rotations.Add(1)
}

// shift renames FILE.k to FILE.k+1, newest last, dropping what is beyond Keep.
func (t *Tap) shift() error {
	p := t.cfg.Path
	if t.cfg.Keep == 0 {
		return nil // create truncates FILE
	}
	os.Remove(fmt.Sprintf("%s.%d", p, t.cfg.Keep))
	for k := t.cfg.Keep - 1; k >= 1; k-- {
		os.Rename(fmt.Sprintf("%s.%d", p, k), fmt.Sprintf("%s.%d", p, k+1)) // missing ones are fine
	}
	if err := os.Rename(p, p+".1"); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("pcaptap: rotate %s: %w", p, err)
	}
	return nil
}

// create opens a new FILE and writes the pcap file header.
func (t *Tap) create() error {
	// Not through a symbolic link, and root's only even when the file was
	// there before (Keep 0 reuses it): it holds the clients' traffic.
	f, err := os.OpenFile(t.cfg.Path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC|syscall.O_NOFOLLOW, 0o600)
	if err != nil {
		return fmt.Errorf("pcaptap: %w", err)
	}
	if err := f.Chmod(0o600); err != nil {
		f.Close()
		return fmt.Errorf("pcaptap: %w", err)
	}
	var h [fileHeaderLen]byte
	binary.LittleEndian.PutUint32(h[0:], 0xa1b2c3d4) // microsecond timestamps
	binary.LittleEndian.PutUint16(h[4:], 2)
	binary.LittleEndian.PutUint16(h[6:], 4)
	binary.LittleEndian.PutUint32(h[16:], uint32(sllLen+t.cfg.SnapLen))
	binary.LittleEndian.PutUint32(h[20:], linkTypeSLL)
	if _, err := f.Write(h[:]); err != nil {
		f.Close()
		return fmt.Errorf("pcaptap: write %s: %w", t.cfg.Path, err)
	}
	if t.w == nil {
		t.w = bufio.NewWriterSize(f, 256<<10)
	} else {
		t.w.Reset(f)
	}
	t.f, t.size, t.flushed = f, fileHeaderLen, fileHeaderLen
	t.pendFrames, t.pendBytes = 0, 0
	return nil
}

func (t *Tap) fail(err error) {
	t.errs.Add(1)
	t.errMu.Lock()
	t.lastErr = err.Error()
	t.errMu.Unlock()
}
