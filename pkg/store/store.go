// Package store owns vmpod's metadata: a bbolt database under the state
// directory holding image records now, and sandbox and container records
// later. Values are JSON documents in one bucket per kind. The schema is
// versioned: a database written by a newer vmpod is refused rather than
// misread.
package store

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/containerd/errdefs"
	bolt "go.etcd.io/bbolt"
)

// SchemaVersion is the metadata schema this binary reads and writes.
const SchemaVersion = 1

// Bucket names one kind of record.
type Bucket string

// The buckets of schema version 1.
const (
	Images     Bucket = "images"
	Sandboxes  Bucket = "sandboxes"
	Containers Bucket = "containers"
)

var (
	metaBucket  = []byte("meta")
	versionKey  = []byte("schema_version")
	instanceKey = []byte("instance_id")
	allBuckets  = []Bucket{Images, Sandboxes, Containers}
)

// Store is the metadata database. It is safe for concurrent use; bbolt
// serialises writers and lets readers run in parallel.
type Store struct {
	db   *bolt.DB
	path string
}

// Open opens (creating if needed) the database at path. It fails with
// FailedPrecondition when another process holds the database open or when
// the database was written by a newer schema version.
func Open(path string) (*Store, error) {
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second})
	if err != nil {
		if errors.Is(err, bolt.ErrTimeout) {
			return nil, fmt.Errorf("metadata store %s is locked by another process (is another vmpod running with this state dir?): %w", path, errdefs.ErrFailedPrecondition)
		}
		return nil, fmt.Errorf("open metadata store %s: %w", path, err)
	}
	s := &Store{db: db, path: path}
	if err := s.init(); err != nil {
		db.Close()
		return nil, err
	}
	return s, nil
}

func (s *Store) init() error {
	return s.db.Update(func(tx *bolt.Tx) error {
		meta, err := tx.CreateBucketIfNotExists(metaBucket)
		if err != nil {
			return err
		}
		if v := meta.Get(versionKey); v != nil {
			have, err := strconv.Atoi(string(v))
			if err != nil {
				return fmt.Errorf("metadata store %s: unreadable schema version %q: %w", s.path, v, errdefs.ErrFailedPrecondition)
			}
			if have > SchemaVersion {
				return fmt.Errorf("metadata store %s was written by a newer vmpod (schema version %d; this vmpod reads up to %d): upgrade vmpod, or move the state directory aside to start empty: %w",
					s.path, have, SchemaVersion, errdefs.ErrFailedPrecondition)
			}
			// Older schemas would be migrated here; version 1 is the first.
		}
		if err := meta.Put(versionKey, []byte(strconv.Itoa(SchemaVersion))); err != nil {
			return err
		}
		if meta.Get(instanceKey) == nil {
			var b [8]byte
			if _, err := rand.Read(b[:]); err != nil {
				return err
			}
			if err := meta.Put(instanceKey, []byte(hex.EncodeToString(b[:]))); err != nil {
				return err
			}
		}
		for _, b := range allBuckets {
			if _, err := tx.CreateBucketIfNotExists([]byte(b)); err != nil {
				return err
			}
		}
		return nil
	})
}

// InstanceID is a random ID made when the store was created: it names this
// vmpod (its state directory) in the domains it defines.
func (s *Store) InstanceID() string {
	var id string
	s.db.View(func(tx *bolt.Tx) error {
		id = string(tx.Bucket(metaBucket).Get(instanceKey))
		return nil
	})
	return id
}

// Close closes the database.
func (s *Store) Close() error { return s.db.Close() }

// Path returns the database file path.
func (s *Store) Path() string { return s.path }

// Put stores v (JSON-encoded) under key in bucket b, replacing any previous
// value. The write is durable when Put returns.
func (s *Store) Put(b Bucket, key string, v any) error {
	data, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("encode %s record %q: %w", b, key, err)
	}
	return s.db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket([]byte(b)).Put([]byte(key), data)
	})
}

// Get decodes the value under key in bucket b into v. It returns an error
// wrapping errdefs.ErrNotFound when there is none.
func (s *Store) Get(b Bucket, key string, v any) error {
	return s.db.View(func(tx *bolt.Tx) error {
		data := tx.Bucket([]byte(b)).Get([]byte(key))
		if data == nil {
			return fmt.Errorf("%s record %q: %w", b, key, errdefs.ErrNotFound)
		}
		return json.Unmarshal(data, v)
	})
}

// Delete removes key from bucket b. Deleting a missing key is not an error.
func (s *Store) Delete(b Bucket, key string) error {
	return s.db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket([]byte(b)).Delete([]byte(key))
	})
}

// ForEach calls fn with every key and raw JSON value of bucket b, in key
// order. The value is only valid during the call.
func (s *Store) ForEach(b Bucket, fn func(key string, value []byte) error) error {
	return s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket([]byte(b)).ForEach(func(k, v []byte) error {
			return fn(string(k), v)
		})
	})
}

// List decodes every record of bucket b with decode, in key order.
func List[T any](s *Store, b Bucket) ([]T, error) {
	var out []T
	err := s.ForEach(b, func(key string, value []byte) error {
		var v T
		if err := json.Unmarshal(value, &v); err != nil {
			return fmt.Errorf("decode %s record %q: %w", b, key, err)
		}
		out = append(out, v)
		return nil
	})
	return out, err
}
