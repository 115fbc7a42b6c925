package lifecycle

import (
	"bufio"
	"bytes"

	"github.com/vmpod/vmpod/pkg/cloudinit"
	"github.com/vmpod/vmpod/pkg/logging"
)

// maxGuestReports bounds how many reports a container keeps and logs: the
// console is the guest's to write, and a hostile guest could print the
// marker in a loop.
const maxGuestReports = 8

// maxReportLine is the longest console line inspected for a report;
// longer lines are skipped.
const maxReportLine = 1024

// watchGuestReports reads the VM's console for the lines the seed makes
// the guest write when something vmpod asked for did not happen (a share
// it could not mount: cloudinit.ShareNotMountedPrefix), until the console
// closes. Each becomes a warning in vmpod's log and in the container's
// verbose status, at most maxGuestReports of them.
func (c *Controller) watchGuestReports(ct *container, con ConsoleHandle) {
	sub, err := con.Subscribe()
	if err != nil {
		return
	}
	defer sub.Close()
	id := ct.Get().ID
	log := c.log.With(logging.KeyContainerID, id)
	r := bufio.NewReaderSize(sub, maxReportLine)
	for {
		line, err := r.ReadSlice('\n')
		if err == bufio.ErrBufferFull {
			// Too long to be a report: skip to the end of the line.
			for err == bufio.ErrBufferFull {
				_, err = r.ReadSlice('\n')
			}
			continue
		}
		if err != nil {
			return
		}
		line = bytes.TrimRight(line, "\r\n")
		i := bytes.Index(line, []byte(cloudinit.ShareNotMountedPrefix))
		if i < 0 || !bytes.Contains(line, []byte(" is not mounted at ")) {
			continue
		}
		report := string(bytes.ToValidUTF8(line[i:], []byte("?")))
		if ct.addReport(report) {
			log.Warn("the guest reports a share it could not mount; its kernel may lack the driver (shared_dir_type)", "report", report)
		}
	}
}

// addReport keeps a guest report; false when there are enough already.
func (ct *container) addReport(r string) bool {
	ct.cmu.Lock()
	defer ct.cmu.Unlock()
	if len(ct.reports) >= maxGuestReports {
		return false
	}
	ct.reports = append(ct.reports, r)
	return true
}

// guestReports returns the reports kept so far.
func (ct *container) guestReports() []string {
	ct.cmu.Lock()
	defer ct.cmu.Unlock()
	return append([]string(nil), ct.reports...)
}
