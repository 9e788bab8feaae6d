package testbed

import (
	"path/filepath"
	"testing"
	"time"
)

// BenchmarkPcapCost measures what --pcap costs: unthrottled 64 MiB
// downloads through the gateway without and with a capture (default
// buffer, files rotated at 100M), alternating, five of each; and how many
// frames the capture could not keep. It asserts only that every download
// arrived whole.
//
//	US_PREFIX=uso go test -count=1 -run '^$' -bench BenchmarkPcapCost -benchtime 1x ./testbed/
func BenchmarkPcapCost(b *testing.B) {
	bed := Up(b, Options{})
	const rounds = 5
	const addr = "127.0.0.1:9410"
	rates := map[bool][]float64{}
	var written, dropped float64
	for r := 0; r < rounds; r++ {
		for _, pcap := range []bool{false, true} {
			args := []string{"--metrics", addr}
			if pcap {
				args = append(args, "--pcap", filepath.Join(bed.Dir, "bench.pcap"))
			}
			gw := bed.StartGateway(args...)
			tr, err := bed.Download("/big.bin")
			if err != nil || tr.SHA256 != bed.SHA256("big.bin") {
				b.Fatalf("download (pcap %v): %v", pcap, err)
			}
			rates[pcap] = append(rates[pcap], tr.mbps())
			if pcap {
				m, err := bed.ScrapeMetrics(addr)
				if err != nil {
					b.Fatal(err)
				}
				w, _ := m.Value("understudy_pcap_frames_total")
				d, _ := m.Value("understudy_pcap_dropped_frames_total")
				written += w
				dropped += d
			}
			if err := gw.Stop(); err != nil {
				b.Fatal(err)
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
	off, on := median(rates[false]), median(rates[true])
	b.Logf("64 MiB downloads, median of %d: %.0f MB/s without --pcap, %.0f MB/s with (%.0f%%); capture kept %.0f frames, dropped %.0f (%.2f%%)",
		rounds, off, on, 100*on/off, written, dropped, 100*dropped/(written+dropped))
	b.ReportMetric(off, "MB/s-no-pcap")
	b.ReportMetric(on, "MB/s-pcap")
	b.ReportMetric(100*dropped/(written+dropped), "pcap-drop-%")
}
