package sd

import (
	"cmp"
	"context"
	"math/rand/v2"
	"time"

	"github.com/trimkit/trimkit/internal/consulname"
	"github.com/trimkit/trimkit/internal/ctxtime"
)

type watchOptions struct {
	read  Read
	rate  float64 // queries a second, sustained
	burst int
}

func newWatchOptions() watchOptions {
	return watchOptions{rate: defaultQueryRate, burst: defaultQueryBurst}
}

// Defaults of the query rate limit: a change after a quiet spell is
// reported at once, a few in a row too, but churn gets at most 4 queries a
// second per watch, as Consul's blocking-query guidance asks of clients
// (each answer of a busy service is the whole list).
const (
	defaultQueryRate  = 4
	defaultQueryBurst = 4
)

// defaultMaxStale is how far behind the leader a stale answer may be
// before a ReadStale watch asks the leader instead: consul-template's default.
const defaultMaxStale = 2 * time.Second

// Read is how an Instancer reads the catalog. Its zero value reads stale
// with a MaxStale of 2s.
type Read struct {
	// Mode is who answers: ReadStale ("stale", the default), ReadLeader
	// ("leader") or ReadCache ("cache"), as cmd/client's -read names them.
	Mode string
	// MaxStale bounds, with ReadStale, how far behind the leader an answer
	// may be (X-Consul-LastContact) before it is asked again of the leader
	// while there is one; with no leader it is the only answer there is,
	// and is used. Default: 2s, consul-template's. Only ReadStale takes it.
	MaxStale time.Duration
}

// Read modes, Read.Mode's values: who answers an Instancer's queries.
const (
	// ReadStale lets any server answer (Consul's ?stale mode): reads
	// spread over the servers and go on while there is no leader (quorum
	// lost), when a leader-only query fails.
	ReadStale = "stale"
	// ReadLeader asks the leader only (Consul's default mode): no answer
	// while there is no leader. A default agent (use_streaming_backend)
	// answers the blocking queries after the first from its streaming
	// view, whatever the mode: as fresh as the leader's, not read from it.
	ReadLeader = "leader"
	// ReadCache asks the local agent's cache (?cached: for the health
	// endpoint, the agent's streaming backend where the servers offer it)
	// rather than the servers: the agent keeps one watch per service for
	// all its clients, and answers while the servers have no leader.
	ReadCache = "cache"
)

// mode is r's mode, its default filled in.
func (r Read) mode() string { return cmp.Or(r.Mode, ReadStale) }

// validate reports a mode out of range, a negative MaxStale, or a MaxStale
// with a mode that does not take it.
func (r Read) validate() error { return consulname.ValidRead(r.Mode, r.MaxStale) }

// limiter spaces a watch's queries: a token bucket of burst tokens that
// refills at rate a second.
type limiter struct {
	rate   float64
	burst  float64
	tokens float64
	last   time.Time
}

func newLimiter(rate float64, burst int) *limiter {
	return &limiter{rate: rate, burst: float64(burst), tokens: float64(burst), last: time.Now()}
}

// wait takes a token, waiting for one if there is none; false if ctx ended.
func (l *limiter) wait(ctx context.Context) bool {
	if l.rate <= 0 {
		return ctx.Err() == nil
	}
	now := time.Now()
	l.tokens = min(l.burst, l.tokens+now.Sub(l.last).Seconds()*l.rate)
	l.last = now
	if l.tokens < 1 {
		wait := time.Duration((1 - l.tokens) / l.rate * float64(time.Second))
		if !ctxtime.Sleep(ctx, wait) {
			return false
		}
		l.last = time.Now()
		l.tokens = 1
	}
	l.tokens--
	return true
}

// watch runs a blocking-query watch until ctx ends: query blocks on index
// and returns the index of its answer, which becomes the next one to block
// on (nextIndex); a failure goes to failed, with the wait before the next
// try. Queries are spaced by o's rate limit, failures by a backoff with
// jitter, 50ms doubling to 5s. Nothing reaches failed once ctx has ended;
// query sees ctx and must not act on an answer that came after it ended.
func watch(ctx context.Context, o watchOptions, index uint64, query func(ctx context.Context, index uint64) (uint64, error), failed func(err error, retryIn time.Duration)) {
	backoff := minQueryBackoff
	limit := newLimiter(o.rate, o.burst)
	for limit.wait(ctx) {
		last, err := query(ctx, index)
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			failed(err, backoff)
			if !ctxtime.Sleep(ctx, jitter(backoff)) {
				return
			}
			backoff = min(2*backoff, maxQueryBackoff)
			continue
		}
		backoff = minQueryBackoff
		index = nextIndex(index, last)
	}
}

// jitter spreads d by ±20%, so that watches that failed together do not
// retry together.
func jitter(d time.Duration) time.Duration {
	return time.Duration(float64(d) * (0.8 + 0.4*rand.Float64()))
}
