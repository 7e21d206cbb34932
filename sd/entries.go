package sd

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"hash/maphash"
	"io"
	"net"
	"sort"
	"strconv"
	"strings"
	"sync"

	"github.com/hashicorp/consul/api"
)

// Entry is one instance in Consul's health answer
// (/v1/health/service/:service): as much of it as discovery uses. Entries
// are shared between answers; do not modify one, nor its Tags or Meta.
type Entry struct {
	ID      string // the service ID
	Service string // the service name
	Node    string // the node's name
	// Address is the service's address, else its node's: where to call it.
	Address string
	Port    int
	Tags    []string
	Meta    map[string]string
	// Region and Zone are the instance's locality, as it registered it
	// (Consul 1.17 and later); "" when it did not.
	Region, Zone string
	// Status is the instance's checks and its node's folded into one, as
	// api.HealthChecks.AggregatedStatus does: "maintenance", else the
	// worst of "critical", "warning" and "passing" ("passing" without
	// checks); "" when a check has a status Consul does not define.
	Status string

	joined string // Address and Port, joined: hostPort
}

// hostPort is where to call the instance: Address and Port, joined.
func (e Entry) hostPort() string {
	if e.joined == "" {
		return net.JoinHostPort(e.Address, strconv.Itoa(e.Port))
	}
	return e.joined
}

// aggregate folds the checks of an instance into one status as
// api.HealthChecks.AggregatedStatus does: maintenance (a maintenance
// check is there), else the worst of critical, warning and passing;
// passing without checks; "" for a status Consul does not define.
type aggregate struct {
	maintenance, critical, warning, unknown bool
}

func (a *aggregate) add(checkID, status string) {
	if checkID == api.NodeMaint || strings.HasPrefix(checkID, api.ServiceMaintPrefix) {
		a.maintenance = true
		return
	}
	switch status {
	case api.HealthPassing:
	case api.HealthWarning:
		a.warning = true
	case api.HealthCritical:
		a.critical = true
	default:
		a.unknown = true
	}
}

func (a aggregate) status() string {
	switch {
	case a.unknown:
		return ""
	case a.maintenance:
		return api.HealthMaint
	case a.critical:
		return api.HealthCritical
	case a.warning:
		return api.HealthWarning
	}
	return api.HealthPassing
}

// entryDecoder decodes health answers into Entries. A blocking query's
// answer repeats almost every entry of the one before, byte for byte:
// the entries within the bytes it shares with the last answer at its start
// and at its end are taken from the last answer without a look (finding
// those bytes is a comparison of memory), and of the entries between, those
// whose bytes are the same as one of the last answer's (by a hash of them)
// too. An answer thus costs a comparison of its bytes plus the decoding of
// the entries that changed. It is safe for concurrent use.
type entryDecoder struct {
	seed maphash.Seed

	mu    sync.Mutex
	body  []byte         // the last answer
	spare []byte         // a buffer for the next answer, body's before
	last  []Entry        // the last answer's entries
	spans []span         // where in body
	index map[uint64]int // into last, by the hash of an entry's bytes
}

// span is where an entry is in an answer, and the hash of its bytes.
type span struct {
	start, end int
	hash       uint64
}

func newEntryDecoder() *entryDecoder {
	return &entryDecoder{seed: maphash.MakeSeed()}
}

// read reads a health answer from r and decodes it; size is its length
// when known, else -1. The answer is read into a buffer kept for the one
// after it: an answer of a thousand instances is over a megabyte.
func (d *entryDecoder) read(r io.Reader, size int64) ([]Entry, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	buf := bytes.NewBuffer(d.spare[:0])
	if size > 0 && size < 1<<30 {
		buf.Grow(int(size) + bytes.MinRead)
	}
	if _, err := buf.ReadFrom(r); err != nil {
		return nil, fmt.Errorf("reading it: %w", err)
	}
	data := buf.Bytes()
	old := d.body
	entries, err := d.decodeLocked(data)
	if err != nil {
		d.spare = data
		return nil, err
	}
	d.spare = old
	return entries, nil
}

// decode decodes a health answer: a JSON array of objects with a Node, a
// Service and Checks. Fields it does not use are skipped without being
// decoded, unknown ones included; a missing one is left at its zero value.
// A malformed answer is an error. data must not change afterwards: the
// next answer is compared with it. (Two different entries hashing alike,
// one chance in 2^64 per pair, would return the older one.)
func (d *entryDecoder) decode(data []byte) ([]Entry, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.decodeLocked(data)
}

// decodeLocked is decode with d.mu held.
func (d *entryDecoder) decodeLocked(data []byte) ([]Entry, error) {
	entries, spans, err := d.parse(data, true)
	if errors.Is(err, errOvershot) {
		entries, spans, err = d.parse(data, false)
	}
	if err != nil {
		return nil, err
	}
	index := make(map[uint64]int, len(spans))
	for i, sp := range spans {
		index[sp.hash] = i
	}
	d.body, d.last, d.spans, d.index = data, entries, spans, index
	if len(entries) == 0 {
		return nil, nil
	}
	return entries, nil
}

// errOvershot says that the bytes an answer shares with the last one at
// its end do not start at an entry of it: it is malformed.
var errOvershot = errors.New("the answer's common end is not at an entry")

// parse decodes data; with shared, the entries in the bytes data shares
// with d.body at its start and at its end are d.last's.
func (d *entryDecoder) parse(data []byte, shared bool) ([]Entry, []span, error) {
	entries := make([]Entry, 0, len(d.last)+1)
	spans := make([]span, 0, len(d.last)+1)
	s := scanner{data: data}
	head, tail := 0, len(d.last) // d.last[:head] and d.last[tail:] are shared
	if shared && len(d.last) > 0 {
		prefix := commonPrefix(d.body, data)
		suffix := commonSuffix(d.body[prefix:], data[prefix:])
		head = sort.Search(len(d.spans), func(i int) bool { return d.spans[i].end > prefix })
		tail = head + sort.Search(len(d.spans)-head, func(i int) bool { return d.spans[head+i].start >= len(d.body)-suffix })
	}
	suffixAt := -1 // where in data d.last[tail:] starts
	if tail < len(d.last) {
		suffixAt = d.spans[tail].start + len(data) - len(d.body)
	}
	first := true
	if head > 0 {
		entries = append(entries, d.last[:head]...)
		spans = append(spans, d.spans[:head]...)
		s.i, first = d.spans[head-1].end, false
	} else {
		s.ws()
		if bytes.HasPrefix(data[s.i:], []byte("null")) {
			s.i += len("null")
			return nil, nil, s.end()
		}
		if err := s.expect('['); err != nil {
			return nil, nil, err
		}
	}
	for {
		if s.peek() == ']' && (first || suffixAt < 0) {
			s.i++
			break
		}
		if !first {
			if err := s.expect(','); err != nil {
				return nil, nil, err
			}
		}
		first = false
		s.ws()
		switch {
		case s.i == suffixAt:
			shift := len(data) - len(d.body)
			for _, sp := range d.spans[tail:] {
				spans = append(spans, span{sp.start + shift, sp.end + shift, sp.hash})
			}
			entries = append(entries, d.last[tail:]...)
			s.i, suffixAt = spans[len(spans)-1].end, -1
			continue
		case suffixAt >= 0 && s.i > suffixAt:
			return nil, nil, errOvershot
		}
		start := s.i
		if err := s.skip(); err != nil {
			return nil, nil, err
		}
		raw := data[start:s.i]
		h := maphash.Bytes(d.seed, raw)
		var e Entry
		if i, ok := d.index[h]; ok {
			e = d.last[i]
		} else {
			var err error
			if e, err = decodeEntry(raw); err != nil {
				return nil, nil, fmt.Errorf("health answer, entry %d: %w", len(entries), err)
			}
		}
		entries = append(entries, e)
		spans = append(spans, span{start, s.i, h})
	}
	if suffixAt >= 0 {
		return nil, nil, errOvershot
	}
	return entries, spans, s.end()
}

// commonPrefix is the length of the longest common prefix of a and b.
func commonPrefix(a, b []byte) int {
	n := min(len(a), len(b))
	// Compare in blocks: bytes.Equal is vectorised, a loop over bytes is not.
	i := 0
	for block := 4096; i+block <= n && bytes.Equal(a[i:i+block], b[i:i+block]); i += block {
	}
	for i < n && a[i] == b[i] {
		i++
	}
	return i
}

// commonSuffix is the length of the longest common suffix of a and b.
func commonSuffix(a, b []byte) int {
	n := min(len(a), len(b))
	i := 0
	for block := 4096; i+block <= n && bytes.Equal(a[len(a)-i-block:len(a)-i], b[len(b)-i-block:len(b)-i]); i += block {
	}
	for i < n && a[len(a)-1-i] == b[len(b)-1-i] {
		i++
	}
	return i
}

// decodeEntry decodes one entry of a health answer.
func decodeEntry(raw []byte) (Entry, error) {
	var (
		e        Entry
		nodeAddr string
		checks   aggregate
	)
	s := scanner{data: raw}
	err := s.object(func(key []byte) error {
		switch string(key) {
		case "Node":
			return s.object(func(key []byte) error {
				var err error
				switch string(key) {
				case "Node":
					e.Node, err = s.str()
				case "Address":
					nodeAddr, err = s.str()
				default:
					err = s.skip()
				}
				return err
			})
		case "Service":
			return s.object(func(key []byte) error {
				var err error
				switch string(key) {
				case "ID":
					e.ID, err = s.str()
				case "Service":
					e.Service, err = s.str()
				case "Address":
					e.Address, err = s.str()
				case "Port":
					e.Port, err = s.int()
				case "Tags":
					e.Tags, err = s.strs()
				case "Meta":
					e.Meta, err = s.strMap()
				case "Locality":
					err = s.object(func(key []byte) error {
						var err error
						switch string(key) {
						case "Region":
							e.Region, err = s.str()
						case "Zone":
							e.Zone, err = s.str()
						default:
							err = s.skip()
						}
						return err
					})
				default:
					err = s.skip()
				}
				return err
			})
		case "Checks":
			return s.array(func() error {
				var id, status string
				err := s.object(func(key []byte) error {
					var err error
					switch string(key) {
					case "CheckID":
						id, err = s.str()
					case "Status":
						status, err = s.str()
					default:
						err = s.skip()
					}
					return err
				})
				checks.add(id, status)
				return err
			})
		}
		return s.skip()
	})
	if err != nil {
		return Entry{}, err
	}
	if e.Address == "" {
		e.Address = nodeAddr
	}
	e.Status = checks.status()
	e.joined = net.JoinHostPort(e.Address, strconv.Itoa(e.Port))
	return e, nil
}

// scanner reads JSON from data, from i on. It decodes only what it is
// asked for and skips the rest, checking only the structure of what it
// skips (strings closed, brackets balanced).
type scanner struct {
	data []byte
	i    int
}

var errEnd = errors.New("unexpected end of JSON")

func (s *scanner) errorf(format string, args ...any) error {
	return fmt.Errorf("JSON at offset %d: %s", s.i, fmt.Sprintf(format, args...))
}

func (s *scanner) ws() {
	for s.i < len(s.data) {
		switch s.data[s.i] {
		case ' ', '\t', '\n', '\r':
			s.i++
		default:
			return
		}
	}
}

// peek is the next byte that is not a space, 0 at the end.
func (s *scanner) peek() byte {
	s.ws()
	if s.i >= len(s.data) {
		return 0
	}
	return s.data[s.i]
}

func (s *scanner) expect(c byte) error {
	switch s.peek() {
	case c:
		s.i++
		return nil
	case 0:
		return errEnd
	}
	return s.errorf("want %q, have %q", c, s.data[s.i])
}

// end checks that nothing but spaces follows.
func (s *scanner) end() error {
	if s.peek() != 0 {
		return s.errorf("data after the answer")
	}
	return nil
}

// rawStr reads a string and returns its bytes between the quotes, escapes
// as they are, and whether there are any.
func (s *scanner) rawStr() (raw []byte, escaped bool, err error) {
	if err := s.expect('"'); err != nil {
		return nil, false, err
	}
	start := s.i
	for j := start; ; {
		k := bytes.IndexByte(s.data[j:], '"')
		if k < 0 {
			return nil, false, errEnd
		}
		j += k
		backslashes := 0
		for p := j - 1; p >= start && s.data[p] == '\\'; p-- {
			backslashes++
		}
		if backslashes%2 == 0 { // the quote is not escaped
			s.i = j + 1
			raw = s.data[start:j]
			return raw, bytes.IndexByte(raw, '\\') >= 0, nil
		}
		j++
	}
}

// str reads a string, or null as "".
func (s *scanner) str() (string, error) {
	if s.null() {
		return "", nil
	}
	raw, escaped, err := s.rawStr()
	if err != nil || !escaped {
		return string(raw), err
	}
	return s.unescape(raw)
}

// unescape is raw, the string rawStr just read, with its escapes decoded.
func (s *scanner) unescape(raw []byte) (string, error) {
	var v string
	if err := json.Unmarshal(s.data[s.i-len(raw)-2:s.i], &v); err != nil {
		return "", s.errorf("string: %v", err)
	}
	return v, nil
}

// null reads a null if there is one.
func (s *scanner) null() bool {
	if s.peek() == 'n' && bytes.HasPrefix(s.data[s.i:], []byte("null")) {
		s.i += len("null")
		return true
	}
	return false
}

// int reads an integer.
func (s *scanner) int() (int, error) {
	s.ws()
	start := s.i
	for s.i < len(s.data) && (s.data[s.i] == '-' || '0' <= s.data[s.i] && s.data[s.i] <= '9') {
		s.i++
	}
	n, err := strconv.Atoi(string(s.data[start:s.i]))
	if err != nil {
		s.i = start
		return 0, s.errorf("want an integer")
	}
	return n, nil
}

// strs reads an array of strings, or null.
func (s *scanner) strs() ([]string, error) {
	var v []string
	err := s.array(func() error {
		str, err := s.str()
		v = append(v, str)
		return err
	})
	return v, err
}

// strMap reads an object of strings, or null.
func (s *scanner) strMap() (map[string]string, error) {
	var m map[string]string
	err := s.object(func(key []byte) error {
		v, err := s.str()
		if m == nil {
			m = map[string]string{}
		}
		m[string(key)] = v
		return err
	})
	return m, err
}

// object reads an object, or null, calling field with each key (unescaped)
// when the scanner is at its value; field must read or skip the value.
func (s *scanner) object(field func(key []byte) error) error {
	return s.list('{', '}', func() error {
		key, escaped, err := s.rawStr()
		if err != nil {
			return err
		}
		if escaped {
			k, err := s.unescape(key)
			if err != nil {
				return err
			}
			key = []byte(k)
		}
		if err := s.expect(':'); err != nil {
			return err
		}
		return field(key)
	})
}

// array reads an array, or null, calling elem when the scanner is at each
// element; elem must read or skip it.
func (s *scanner) array(elem func() error) error { return s.list('[', ']', elem) }

// list reads an object or an array, between open and end, or null,
// calling elem at each member, which must read it.
func (s *scanner) list(open, end byte, elem func() error) error {
	if s.null() {
		return nil
	}
	if err := s.expect(open); err != nil {
		return err
	}
	if s.peek() == end {
		s.i++
		return nil
	}
	for {
		if err := elem(); err != nil {
			return err
		}
		if s.peek() == ',' {
			s.i++
			continue
		}
		return s.expect(end)
	}
}

// skip skips a value, checking only that its strings are closed and its
// brackets balanced.
func (s *scanner) skip() error {
	switch c := s.peek(); c {
	case 0:
		return errEnd
	case '"':
		_, _, err := s.rawStr()
		return err
	case '{', '[':
		depth := 0
		for s.i < len(s.data) {
			switch s.data[s.i] {
			case '"':
				if _, _, err := s.rawStr(); err != nil {
					return err
				}
				continue
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					s.i++
					return nil
				}
			}
			s.i++
		}
		return errEnd
	case '}', ']', ',', ':':
		return s.errorf("want a value, have %q", c)
	default: // a number, true, false or null
		start := s.i
		for s.i < len(s.data) {
			switch s.data[s.i] {
			case ',', '}', ']', ' ', '\t', '\n', '\r':
				return nil
			case '"', '{', '[', ':':
				return s.errorf("malformed value %q", s.data[start:s.i+1])
			}
			s.i++
		}
		return nil
	}
}
