package config

import (
	"fmt"
	"time"

	"k8s.io/apimachinery/pkg/api/resource"
)

// Duration is a time.Duration written as a Go duration string ("30s", "10m")
// in the configuration file.
type Duration time.Duration

// MarshalText implements encoding.TextMarshaler.
func (d Duration) MarshalText() ([]byte, error) { return []byte(time.Duration(d).String()), nil }

// UnmarshalText implements encoding.TextUnmarshaler.
func (d *Duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(string(b))
	if err != nil {
		return fmt.Errorf("invalid duration %q (use a Go duration such as 30s or 10m): %w", b, err)
	}
	*d = Duration(v)
	return nil
}

// Std returns d as a time.Duration.
func (d Duration) Std() time.Duration { return time.Duration(d) }

// ByteSize is a number of bytes written as a Kubernetes quantity ("64Gi",
// "500Mi", "1G", or plain bytes) in the configuration file.
type ByteSize int64

// MarshalText implements encoding.TextMarshaler: the shortest binary
// quantity ("64Gi").
func (b ByteSize) MarshalText() ([]byte, error) {
	return []byte(resource.NewQuantity(int64(b), resource.BinarySI).String()), nil
}

// UnmarshalText implements encoding.TextUnmarshaler.
func (b *ByteSize) UnmarshalText(text []byte) error {
	q, err := resource.ParseQuantity(string(text))
	if err != nil {
		return fmt.Errorf("invalid size %q (use a quantity such as 64Gi or 500Mi): %w", text, err)
	}
	v, ok := q.AsInt64()
	if !ok || v < 0 {
		return fmt.Errorf("invalid size %q: not a whole, non-negative number of bytes that fits in 63 bits", text)
	}
	*b = ByteSize(v)
	return nil
}

// Bytes returns b as an int64.
func (b ByteSize) Bytes() int64 { return int64(b) }
