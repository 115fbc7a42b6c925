package guest

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"strings"
	"testing"
)

// FuzzAgentReplies gives the guest agent client hostile replies (the
// agent is the guest's) through a fake Commander: execReply answers
// guest-exec and guest-info, statusReply guest-exec-status, and the
// captured output is decoded as RunCaptured does with the cap outCap.
// Properties:
//   - Exec succeeds only with a positive pid, the one the reply holds;
//   - Info returns the reply's version;
//   - Status's exit code is the reply's exitcode, else 128+signal;
//   - decoded output is the reply's base64 data, cut at the cap, and
//     ends in TruncationNote exactly when it was cut or the agent said so;
//   - no error message echoes more than a bounded part of a reply.
func FuzzAgentReplies(f *testing.F) {
	f.Add(`{"return":{"pid":42,"version":"7.2.0"}}`, `{"return":{"exited":true,"exitcode":3,"out-data":"aGVsbG8K","err-data":"","out-truncated":false}}`, uint16(0))
	f.Add(`{"return":{"pid":0}}`, `{"return":{"exited":true,"signal":9,"err-data":"b29wcw==","err-truncated":true}}`, uint16(2))
	f.Add(`{"return":{"pid":"1; rm -rf /"}}`, `{"return":{"exited":false}}`, uint16(1))
	f.Add(`{"error":{"class":"GenericError","desc":"no"}}`, `{"return":{"exited":true,"exitcode":-2147483648,"out-data":"!!not base64!!"}}`, uint16(0))
	f.Add("\x00\xffgarbage", `{"return":null}`, uint16(65535))
	f.Add(`{"return":{"pid":9223372036854775807}}`, `{"return":{"exited":true,"exitcode":1e3}}`, uint16(4))
	f.Fuzz(func(t *testing.T, execReply, statusReply string, outCap uint16) {
		a := NewAgent(agentFunc(func(_, cmd string) (string, error) {
			if strings.Contains(cmd, `"guest-exec-status"`) {
				return statusReply, nil
			}
			return execReply, nil
		}), "vm")
		ctx := t.Context()
		bounded := func(what string, err error) {
			if err != nil && len(err.Error()) > 2000 {
				t.Fatalf("%s: the error has %d bytes: it repeats the reply", what, len(err.Error()))
			}
		}

		var claimed struct {
			Return struct {
				PID     json.RawMessage `json:"pid"`
				Version json.RawMessage `json:"version"`
			} `json:"return"`
		}
		decodable := json.Unmarshal([]byte(execReply), &claimed) == nil
		pid, err := a.Exec(ctx, []string{"true"}, []byte("in"))
		bounded("Exec", err)
		if err == nil {
			var want int
			if pid <= 0 || !decodable || json.Unmarshal(claimed.Return.PID, &want) != nil || want != pid {
				t.Fatalf("Exec accepted pid %d from %q", pid, execReply)
			}
		}
		version, err := a.Info(ctx)
		bounded("Info", err)
		if err == nil && version != "" {
			var want string
			if !decodable || json.Unmarshal(claimed.Return.Version, &want) != nil || want != version {
				t.Fatalf("Info returned %q from %q", version, execReply)
			}
		}

		st, err := a.Status(ctx, 7)
		bounded("Status", err)
		if err != nil {
			return
		}
		switch code := st.Code(); {
		case st.ExitCode != nil && code != *st.ExitCode,
			st.ExitCode == nil && st.Signal != nil && code != 128+*st.Signal,
			st.ExitCode == nil && st.Signal == nil && code != 0:
			t.Fatalf("Code() = %d for exitcode %v signal %v", code, st.ExitCode, st.Signal)
		}
		_ = st.Stderr()
		for _, s := range []struct {
			b64       string
			truncated bool
		}{{st.OutData, st.OutTruncated}, {st.ErrData, st.ErrTruncated}} {
			out, err := decodeOutput(s.b64, s.truncated, int(outCap))
			bounded("decodeOutput", err)
			raw, decErr := base64.StdEncoding.DecodeString(s.b64)
			if (err == nil) != (decErr == nil) {
				t.Fatalf("decodeOutput(%q) error %v, base64 says %v", s.b64, err, decErr)
			}
			if err != nil {
				continue
			}
			cut := outCap > 0 && len(raw) > int(outCap)
			body, noted := bytes.CutSuffix(out, []byte(TruncationNote))
			if !noted && (cut || s.truncated) {
				t.Fatalf("output cut (%v) or truncated by the agent (%v) without the note: %q", cut, s.truncated, out)
			}
			if !cut && !s.truncated {
				body = out // the data itself may end like the note
			}
			if outCap > 0 && len(body) > int(outCap) {
				t.Fatalf("%d bytes of output, above the cap %d", len(body), outCap)
			}
			if !bytes.HasPrefix(raw, body) || (!cut && len(body) != len(raw)) {
				t.Fatalf("output %q is not the agent's data %q cut at %d", body, raw, outCap)
			}
		}
	})
}
