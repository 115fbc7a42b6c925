package k8se2e

import (
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
	"time"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Jobs whose pods are VMs: the container's command runs in the test guest
// and its exit code decides the Job (docs/vm-pods.md, "The container's
// command").
const (
	jobOK   = "vm-job-ok"
	jobFail = "vm-job-fail"
)

// jobManifest is a Job of one VM pod running argv, never retried.
func (c *cluster) jobManifest(name string, argv ...string) string {
	c.t.Helper()
	vmpod, no, zero := "vmpod", false, int32(0)
	job := batchv1.Job{
		TypeMeta:   metav1.TypeMeta{APIVersion: "batch/v1", Kind: "Job"},
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default"},
		Spec: batchv1.JobSpec{
			BackoffLimit: &zero,
			Template: corev1.PodTemplateSpec{Spec: corev1.PodSpec{
				RuntimeClassName: &vmpod, NodeName: nodeName, RestartPolicy: corev1.RestartPolicyNever,
				AutomountServiceAccountToken: &no,
				Containers: []corev1.Container{{
					Name: "job", Image: vmImage, ImagePullPolicy: corev1.PullIfNotPresent,
					Command: argv[:1], Args: argv[1:],
				}},
			}},
		},
	}
	b, err := json.MarshalIndent(job, "", "  ")
	if err != nil {
		c.t.Fatal(err)
	}
	p := c.path(name + ".json")
	c.write(p, string(b))
	return p
}

// jobDone polls a Job until it has condition cond (Complete or Failed).
func (c *cluster) jobDone(name string, cond batchv1.JobConditionType) {
	c.t.Helper()
	// A Job ends after its VM booted, its command ran and its VM powered
	// off: a boot and a minute.
	c.waitFor("job "+name+" "+string(cond), "kube-controller-manager-jobs", bootLimit+time.Minute, func() error {
		out, err := c.kubectl(30*time.Second, "get", "job", name, "-o", "json")
		if err != nil {
			return err
		}
		var job batchv1.Job
		if err := json.Unmarshal([]byte(out), &job); err != nil {
			return err
		}
		for _, jc := range job.Status.Conditions {
			if jc.Status != corev1.ConditionTrue {
				continue
			}
			if jc.Type == cond {
				return nil
			}
			if jc.Type == batchv1.JobComplete || jc.Type == batchv1.JobFailed {
				c.t.Fatalf("job %s: %s (%s), want %s", name, jc.Type, jc.Message, cond)
			}
		}
		st, _ := json.Marshal(job.Status)
		return fmt.Errorf("status %s", st)
	})
}

// jobTerminated is the terminated state of the container of a Job's pod.
func (c *cluster) jobTerminated(name string) *corev1.ContainerStateTerminated {
	c.t.Helper()
	var pods corev1.PodList
	if err := json.Unmarshal([]byte(c.mustKubectl("get", "pods", "-l", "job-name="+name, "-o", "json")), &pods); err != nil {
		c.t.Fatal(err)
	}
	if len(pods.Items) != 1 || len(pods.Items[0].Status.ContainerStatuses) != 1 || pods.Items[0].Status.ContainerStatuses[0].State.Terminated == nil {
		c.t.Fatalf("job %s: want one pod with a terminated container, got %+v", name, pods.Items)
	}
	return pods.Items[0].Status.ContainerStatuses[0].State.Terminated
}

// checkJobs runs two Jobs of VM pods with the Job controller of a
// kube-controller-manager of its own: one whose command exits 0 ends
// Complete, one whose command exits 3 ends Failed, each by its container's
// exit code; kubectl logs has the command's output.
func (c *cluster) checkJobs() {
	t := c.t
	t.Helper()
	c.start("kube-controller-manager-jobs", nil, filepath.Join(c.bin, "kube-controller-manager"),
		"--kubeconfig", c.kubeconfig, "--controllers", "job", "--leader-elect=false",
		"--secure-port", "0", "--use-service-account-credentials=false")
	defer c.stop("kube-controller-manager-jobs", 10*time.Second)

	s := begin(t, "Jobs of VM pods: exit 0 is Complete, exit 3 is Failed")
	c.mustKubectl("apply", "-f", c.jobManifest(jobOK, "sh", "-c", "echo job says hello; exit 0"))
	c.mustKubectl("apply", "-f", c.jobManifest(jobFail, "sh", "-c", "echo job fails >&2; exit 3"))
	c.jobDone(jobOK, batchv1.JobComplete)
	c.jobDone(jobFail, batchv1.JobFailed)
	if st := c.jobTerminated(jobOK); st.ExitCode != 0 || st.Reason != "Completed" {
		t.Fatalf("%s: container terminated %+v", jobOK, st)
	}
	if st := c.jobTerminated(jobFail); st.ExitCode != 3 || st.Reason != "Error" {
		t.Fatalf("%s: container terminated %+v", jobFail, st)
	}
	for job, want := range map[string]string{jobOK: "job says hello", jobFail: "job fails"} {
		out := c.mustKubectl("logs", "job/"+job)
		var lines []string
		for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
			if !strings.HasPrefix(l, "[console] ") {
				lines = append(lines, l)
			}
		}
		if len(lines) != 1 || lines[0] != want {
			t.Fatalf("kubectl logs job/%s: the command's lines %q, want %q", job, lines, want)
		}
	}
	s.done()

	s = begin(t, "delete the Jobs and their pods")
	c.mustKubectl("delete", "pod", "-l", "job-name in ("+jobOK+","+jobFail+")", "--wait=true", "--timeout=3m")
	c.mustKubectl("delete", "job", jobOK, jobFail, "--cascade=orphan", "--wait=true", "--timeout=1m")
	s.done()
}
