package libvirttools

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/containerd/errdefs"
)

// A libvirt QEMU save image (virDomainSave) starts with a header that
// libvirt 9.0 writes as (src/qemu/qemu_saveimage.h, version 2):
//
//	magic        [16]byte  "LibvirtQemudSave"
//	version      uint32    2
//	data_len     uint32    bytes of data after the header
//	was_running  uint32
//	compressed   uint32    QEMU_SAVE_FORMAT_*
//	cookieOffset uint32    where the cookie starts in data
//	unused       [14]uint32
//	data         the domain XML, NUL, the migration cookie, NUL, zero
//	             padding up to data_len
//
// followed by QEMU's migration stream. Integers are in host byte order
// (little-endian on x86-64, the only architecture vmpod runs on).
// libvirt's restore checks that an alternative XML keeps the image's name
// and UUID, so a saved VM can only come back under its own identity.
// vmpod restores a checkpoint as a new container by writing the new
// domain definition into the header itself (RewriteSaveImageXML); the
// device model must stay the same, which vmpod guarantees by changing
// only names, paths, the UUID and the metadata.
const (
	saveImageMagic      = "LibvirtQemudSave"
	saveImageVersion    = 2
	saveImageHeaderSize = 16 + 4*5 + 4*14
	// maxSaveImageData bounds the header's data: libvirt pads it to
	// 64 KiB beyond the XML; a domain XML is a few KiB.
	maxSaveImageData = 4 << 20
)

// saveImageHeader is a save image's header and data.
type saveImageHeader struct {
	fields [5]uint32 // version, data_len, was_running, compressed, cookieOffset
	xml    []byte
	cookie []byte
}

// readSaveImageHeader reads and checks the header of the save image r.
func readSaveImageHeader(r io.Reader) (*saveImageHeader, error) {
	var raw [saveImageHeaderSize]byte
	if _, err := io.ReadFull(r, raw[:]); err != nil {
		return nil, fmt.Errorf("read the save image header: %w", err)
	}
	if string(raw[:16]) != saveImageMagic {
		return nil, fmt.Errorf("not a complete libvirt QEMU save image (magic %q): %w", bytes.TrimRight(raw[:16], "\x00"), errdefs.ErrInvalidArgument)
	}
	h := &saveImageHeader{}
	for i := range h.fields {
		h.fields[i] = binary.LittleEndian.Uint32(raw[16+4*i:])
	}
	version, dataLen, cookieOff := h.fields[0], h.fields[1], h.fields[4]
	if version != saveImageVersion {
		return nil, fmt.Errorf("save image version %d; vmpod reads version %d (libvirt 9.0): %w", version, saveImageVersion, errdefs.ErrInvalidArgument)
	}
	if dataLen == 0 || dataLen > maxSaveImageData {
		return nil, fmt.Errorf("save image data of %d bytes (at most %d): %w", dataLen, maxSaveImageData, errdefs.ErrInvalidArgument)
	}
	data := make([]byte, dataLen)
	if _, err := io.ReadFull(r, data); err != nil {
		return nil, fmt.Errorf("read the save image data: %w", err)
	}
	xmlEnd := bytes.IndexByte(data, 0)
	if xmlEnd <= 0 {
		return nil, fmt.Errorf("save image without a domain XML: %w", errdefs.ErrInvalidArgument)
	}
	h.xml = data[:xmlEnd]
	if cookieOff != 0 {
		if cookieOff <= uint32(xmlEnd) || cookieOff >= dataLen {
			return nil, fmt.Errorf("save image cookie at %d, outside its data (%d bytes, XML %d): %w", cookieOff, dataLen, xmlEnd, errdefs.ErrInvalidArgument)
		}
		c := data[cookieOff:]
		end := bytes.IndexByte(c, 0)
		if end < 0 {
			return nil, fmt.Errorf("save image cookie not terminated: %w", errdefs.ErrInvalidArgument)
		}
		h.cookie = c[:end]
	}
	return h, nil
}

// encode returns the header and data with xml as the domain XML, padded
// to the image's data length; it fails when they no longer fit.
func (h *saveImageHeader) encode(xml []byte) ([]byte, error) {
	if bytes.IndexByte(xml, 0) >= 0 {
		return nil, fmt.Errorf("domain XML with a NUL byte: %w", errdefs.ErrInvalidArgument)
	}
	dataLen := h.fields[1]
	data := append(append([]byte(nil), xml...), 0)
	cookieOff := uint32(0)
	if h.cookie != nil {
		cookieOff = uint32(len(data))
		data = append(append(data, h.cookie...), 0)
	}
	if uint32(len(data)) > dataLen {
		return nil, fmt.Errorf("the new domain XML (%d bytes) does not fit the save image's %d bytes of header data: %w", len(xml), dataLen, errdefs.ErrInvalidArgument)
	}
	out := make([]byte, saveImageHeaderSize+int(dataLen))
	copy(out, saveImageMagic)
	f := h.fields
	f[4] = cookieOff
	for i, v := range f {
		binary.LittleEndian.PutUint32(out[16+4*i:], v)
	}
	copy(out[saveImageHeaderSize:], data)
	return out, nil
}

// SaveImageXML returns the domain XML in the header of the save image at
// path.
func SaveImageXML(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h, err := readSaveImageHeader(f)
	if err != nil {
		return "", fmt.Errorf("%s: %w", path, err)
	}
	return string(h.xml), nil
}

// RewriteSaveImageXML replaces the domain XML in the header of the save
// image at path, in place; the migration stream after the header is not
// touched. The XML must fit the header's data length (libvirt leaves
// 64 KiB of room).
func RewriteSaveImageXML(path, xml string) error {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	h, err := readSaveImageHeader(f)
	if err != nil {
		f.Close()
		return fmt.Errorf("%s: %w", path, err)
	}
	b, err := h.encode([]byte(xml))
	if err != nil {
		f.Close()
		return fmt.Errorf("%s: %w", path, err)
	}
	if _, err := f.WriteAt(b, 0); err != nil {
		f.Close()
		return fmt.Errorf("rewrite the header of %s: %w", path, err)
	}
	return errors.Join(f.Sync(), f.Close())
}

// WriteSaveImage writes a save image with xml, cookie (none when empty),
// dataLen bytes of header data and payload as its migration stream: for
// tests and the fake libvirt, which have no QEMU.
func WriteSaveImage(w io.Writer, xml, cookie string, dataLen int, payload []byte) error {
	h := &saveImageHeader{fields: [5]uint32{saveImageVersion, uint32(dataLen), 1, 0, 0}}
	if cookie != "" {
		h.cookie = []byte(cookie)
	}
	b, err := h.encode([]byte(xml))
	if err != nil {
		return err
	}
	if _, err := w.Write(b); err != nil {
		return err
	}
	_, err = w.Write(payload)
	return err
}
