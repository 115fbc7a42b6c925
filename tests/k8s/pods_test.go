package k8se2e

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/yaml"
)

// vmPodManifest is examples/vm-readiness-probe.yaml adapted to this node:
// nodeName set, the test guest's image, no service account token (the
// controller manager runs no token controller), and its port 8080 also
// published as hostPort on the bridge's address, so that the pod has
// iptables rules (the portmap plugin's) whose removal the test checks.
func (c *cluster) vmPodManifest(hostPort int) string {
	c.t.Helper()
	b, err := os.ReadFile(filepath.Join(repo, "examples/vm-readiness-probe.yaml"))
	if err != nil {
		c.t.Fatal(err)
	}
	var pod corev1.Pod
	if err := yaml.UnmarshalStrict(b, &pod); err != nil {
		c.t.Fatal(err)
	}
	if pod.Name != vmPod || pod.Spec.RuntimeClassName == nil || *pod.Spec.RuntimeClassName != "vmpod" {
		c.t.Fatalf("examples/vm-readiness-probe.yaml: pod %q with runtimeClassName %v, want %s with vmpod", pod.Name, pod.Spec.RuntimeClassName, vmPod)
	}
	pod.Namespace = "default"
	pod.Spec.NodeName = nodeName
	pod.Spec.Containers[0].Image = vmImage
	ports := pod.Spec.Containers[0].Ports
	if len(ports) != 1 || ports[0].ContainerPort != 8080 {
		c.t.Fatalf("examples/vm-readiness-probe.yaml: ports %+v, want 8080", ports)
	}
	ports[0].HostPort, ports[0].HostIP = int32(hostPort), gateway
	no := false
	pod.Spec.AutomountServiceAccountToken = &no
	return c.manifest(vmPod, pod)
}

// ctrPodManifest is an ordinary pod (no RuntimeClass) on the same node.
func (c *cluster) ctrPodManifest() string {
	no := false
	pod := corev1.Pod{
		TypeMeta:   metaType(),
		ObjectMeta: objectMeta(ctrPod),
		Spec: corev1.PodSpec{
			NodeName:                     nodeName,
			AutomountServiceAccountToken: &no,
			Containers: []corev1.Container{{
				Name: "hello", Image: helloImage, ImagePullPolicy: corev1.PullNever,
				Ports: []corev1.ContainerPort{{ContainerPort: 8080}},
				ReadinessProbe: &corev1.Probe{
					ProbeHandler:  corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/", Port: intOrString(8080)}},
					PeriodSeconds: 2,
				},
			}},
		},
	}
	pod.Spec.Hostname = ctrPod
	return c.manifest(ctrPod, pod)
}

func (c *cluster) manifest(name string, pod corev1.Pod) string {
	c.t.Helper()
	b, err := json.MarshalIndent(pod, "", "  ")
	if err != nil {
		c.t.Fatal(err)
	}
	p := c.path(name + ".json")
	c.write(p, string(b))
	return p
}

func podRunning(p *corev1.Pod) bool { return p.Status.Phase == corev1.PodRunning }

func podReady(p *corev1.Pod) bool {
	for _, cond := range p.Status.Conditions {
		if cond.Type == corev1.PodReady {
			return cond.Status == corev1.ConditionTrue
		}
	}
	return false
}

// waitPod polls the pod until ok holds and returns it.
func (c *cluster) waitPod(name string, timeout time.Duration, ok func(*corev1.Pod) bool) *corev1.Pod {
	c.t.Helper()
	var pod corev1.Pod
	c.waitFor("pod "+name, "kubelet", timeout, func() error {
		out, err := c.kubectl(30*time.Second, "get", "pod", name, "-o", "json")
		if err != nil {
			return err
		}
		pod = corev1.Pod{}
		if err := json.Unmarshal([]byte(out), &pod); err != nil {
			return err
		}
		if !ok(&pod) {
			st, _ := json.Marshal(pod.Status)
			return fmt.Errorf("status %s", st)
		}
		return nil
	})
	return &pod
}

// waitKubectlLogs polls kubectl logs until the output contains want.
func (c *cluster) waitKubectlLogs(pod, want string, timeout time.Duration) {
	c.t.Helper()
	c.waitFor("kubectl logs "+pod+": "+want, "vmpod", timeout, func() error {
		out, err := c.kubectl(30*time.Second, "logs", pod)
		if err != nil {
			return err
		}
		if !strings.Contains(out, want) {
			return fmt.Errorf("no %q in:\n%s", want, tail(out, 15))
		}
		return nil
	})
}

func metaType() metav1.TypeMeta { return metav1.TypeMeta{APIVersion: "v1", Kind: "Pod"} }

func objectMeta(name string) metav1.ObjectMeta {
	return metav1.ObjectMeta{Name: name, Namespace: "default", Labels: map[string]string{"app": name}}
}

func intOrString(port int) intstr.IntOrString { return intstr.FromInt32(int32(port)) }
