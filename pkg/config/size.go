package config

import (
	"fmt"

	"k8s.io/apimachinery/pkg/api/resource"
)

// Size is a number of bytes written as a Kubernetes quantity ("64Gi",
// "512Mi", "10G") in the configuration file.
type Size int64

// MarshalText implements encoding.TextMarshaler.
func (s Size) MarshalText() ([]byte, error) {
	return []byte(resource.NewQuantity(int64(s), resource.BinarySI).String()), nil
}

// UnmarshalText implements encoding.TextUnmarshaler. Negative sizes and
// sizes beyond what int64 holds are refused.
func (s *Size) UnmarshalText(b []byte) error {
	q, err := resource.ParseQuantity(string(b))
	if err != nil {
		return fmt.Errorf("invalid size %q (use a quantity such as 64Gi or 512Mi): %w", b, err)
	}
	v, ok := q.AsInt64()
	if !ok || v < 0 {
		return fmt.Errorf("invalid size %q: must be between 0 and 8Ei", b)
	}
	*s = Size(v)
	return nil
}

// Bytes returns s as a byte count.
func (s Size) Bytes() int64 { return int64(s) }
