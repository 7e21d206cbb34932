package sd

import (
	"errors"
	"fmt"
	"strings"
	"sync"

	"github.com/go-kit/log"
)

// Instancers shares Instancers among the clients of one process: those
// that watch the same service, with the same tags, through the same agent
// with the same settings, get one Instancer, which makes one blocking query
// per change and decodes each answer once, however many watch. Its zero
// value is ready to use; it must not be copied after first use.
type Instancers struct {
	mu      sync.Mutex
	watches map[sharedKey]*sharedWatch
}

// sharedKey is what makes two watches the same one.
type sharedKey struct {
	agent       string // the agent and how it is reached (Consul's CLI environment applied)
	service     string
	tags        string
	passingOnly bool
	read        Read
}

type sharedWatch struct {
	ready chan struct{} // closed once instancer or err is set
	inst  *watcher
	err   error
	refs  int
	close func() // the idle connections of the watch's Consul client
}

// Instancer returns an Instancer of the instances of service carrying every
// tag in tags (only passing ones when passingOnly), read as read says
// through the agent cfg describes: the one already watching the same, if
// there is one, else a new one (see NewInstancer; its Consul client is one
// ConsulConfig.NewClient's). A shared watch logs to the logger of the call that
// started it. Stop the returned Instancer when done with it.
func (p *Instancers) Instancer(cfg ConsulConfig, logger log.Logger, service string, tags []string, passingOnly bool, read Read) (*Instancer, error) {
	if logger == nil {
		return nil, errors.New("sd: Instancers.Instancer needs a logger")
	}
	agent, err := cfg.identity()
	if err != nil {
		return nil, err
	}
	key := sharedKey{agent: agent, service: service, tags: strings.Join(tags, "\x00"), passingOnly: passingOnly, read: Read{Mode: read.mode(), MaxStale: read.MaxStale}}
	p.mu.Lock()
	if p.watches == nil {
		p.watches = map[sharedKey]*sharedWatch{}
	}
	w, ok := p.watches[key]
	if ok {
		w.refs++
		p.mu.Unlock()
		<-w.ready
	} else {
		w = &sharedWatch{ready: make(chan struct{}), refs: 1}
		p.watches[key] = w
		p.mu.Unlock()
		w.inst, w.close, w.err = newWatch(cfg, logger, service, tags, passingOnly, read)
		close(w.ready)
		if w.err != nil {
			p.mu.Lock()
			if p.watches[key] == w {
				delete(p.watches, key)
			}
			p.mu.Unlock()
		}
	}
	if w.err != nil {
		return nil, w.err
	}
	return &Instancer{w: w.inst, stop: func() { p.release(key, w) }}, nil
}

func (p *Instancers) release(key sharedKey, w *sharedWatch) {
	p.mu.Lock()
	w.refs--
	last := w.refs == 0
	if last && p.watches[key] == w {
		delete(p.watches, key)
	}
	p.mu.Unlock()
	if last {
		w.inst.stop()
		w.close()
	}
}

// len is the number of watches running.
func (p *Instancers) len() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.watches)
}

// newWatch starts the Instancer of a shared watch, with a Consul client of
// its own, and returns what closes that client's idle connections.
func newWatch(cfg ConsulConfig, logger log.Logger, service string, tags []string, passingOnly bool, read Read) (*watcher, func(), error) {
	c, apiCfg, err := cfg.newClient()
	if err != nil {
		return nil, nil, err
	}
	o := newWatchOptions()
	o.read = read
	inst, err := newWatcher(c, logger, service, tags, passingOnly, o)
	if err != nil {
		apiCfg.Transport.CloseIdleConnections()
		return nil, nil, err
	}
	return inst, apiCfg.Transport.CloseIdleConnections, nil
}

// identity names the agent c reaches and everything about how, the Consul
// CLI's environment applied: two configurations with the same identity
// reach the same agent the same way.
func (c ConsulConfig) identity() (string, error) {
	if err := c.validateFields(); err != nil {
		return "", err
	}
	cfg, where, err := c.apiConfig()
	if err != nil {
		return "", err
	}
	return fmt.Sprintf("%s|%+v|%q|%q|%+v|%+v|%q|%q|%q", where, c, cfg.Token, cfg.TokenFile, cfg.TLSConfig, cfg.HttpAuth, cfg.Datacenter, cfg.Namespace, cfg.Partition), nil
}
