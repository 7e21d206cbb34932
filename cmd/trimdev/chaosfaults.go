package main

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/trimkit/trimkit/internal/ctxtime"
	"github.com/trimkit/trimkit/internal/localconsul"
)

// inject injects fl and undoes what it did (a killed member is started
// again, a frozen instance thawed); recover then waits for the cluster to
// be whole. It returns the member hit and what happened.
func (s *soak) inject(ctx context.Context, fl fault) (target, what string, err error) {
	if len(fl.parts) > 0 {
		return s.injectCompound(ctx, fl)
	}
	if fl.step > 0 {
		return s.walkStep(ctx, fl.step)
	}
	f := s.f
	instance := &f.st.Instances[fl.target%len(f.st.Instances)]
	switch fl.kind {
	case instanceKill, instanceTerm:
		sig, wait := syscall.SIGKILL, 5*time.Second
		if fl.kind == instanceTerm {
			sig, wait = syscall.SIGTERM, 20*time.Second // it deregisters and drains
		}
		if err := sendSignal(instance, sig); err != nil {
			return instance.Name, "", err
		}
		if err := waitGone(instance, wait); err != nil {
			return instance.Name, "", err
		}
		note, err := f.start(ctx, instance.Name)
		return instance.Name, joinNote(fmt.Sprintf("%s, started again on %s", signalName(sig), instance.Addr), note), err
	case instanceStop:
		if err := sendSignal(instance, syscall.SIGSTOP); err != nil {
			return instance.Name, "", err
		}
		ctxtime.Sleep(ctx, fl.hold)
		if err := sendSignal(instance, syscall.SIGCONT); err != nil {
			return instance.Name, "", err
		}
		return instance.Name, fmt.Sprintf("SIGSTOP, SIGCONT %v later", fl.hold.Round(time.Millisecond)), nil
	case serverKill, leaderKill:
		return s.killServer(ctx, fl)
	case client1Restart, client2Restart:
		name := "client-1"
		if fl.kind == client2Restart {
			name = "client-2"
		}
		_, err := f.restart(ctx, name)
		return name, "SIGTERM (it leaves the cluster), started again", err
	case instanceToken:
		return instance.Name, "new token written to its token file, old one deleted", s.rotate(ctx, tokenFileOf(instance), instanceTokenWatch)
	case callerToken:
		return "callers", "new token written to the callers' token file, old one deleted", s.rotate(ctx, f.st.Caller.TokenFile, callerTokenWatch)
	}
	return "", "", fmt.Errorf("unknown fault kind %q", fl.kind)
}

// injectCompound injects the parts of a compound fault: two overlapping,
// the second fl.lag after the first began, or one after the other, each as
// soon as the one before was undone, with no wait for recovery.
func (s *soak) injectCompound(ctx context.Context, fl fault) (target, what string, err error) {
	targets := make([]string, len(fl.parts))
	whats := make([]string, len(fl.parts))
	errs := make([]error, len(fl.parts))
	if fl.kind == backToBack {
		for i, p := range fl.parts {
			targets[i], whats[i], errs[i] = s.inject(ctx, p)
			whats[i] = fmt.Sprintf("%s %s: %s", p.kind, targets[i], whats[i])
			if errs[i] != nil {
				break
			}
		}
	} else {
		var wg sync.WaitGroup
		wg.Add(1)
		go func() {
			defer wg.Done()
			targets[0], whats[0], errs[0] = s.inject(ctx, fl.parts[0])
		}()
		ctxtime.Sleep(ctx, fl.lag)
		targets[1], whats[1], errs[1] = s.inject(ctx, fl.parts[1])
		wg.Wait()
		whats[0] = fmt.Sprintf("%s %s: %s", fl.parts[0].kind, targets[0], whats[0])
		whats[1] = fmt.Sprintf("%v later, %s %s: %s", fl.lag.Round(time.Millisecond), fl.parts[1].kind, targets[1], whats[1])
	}
	return strings.Join(targets, "+"), strings.Join(whats, "; "), errors.Join(errs...)
}

// walkStep runs step n of the walkthrough, its commands as printed, each
// checked as the walkthrough checks it. The commands record what they
// restart in the state file; the soak reads it again after (reload).
func (s *soak) walkStep(ctx context.Context, n int) (target, what string, err error) {
	f := s.f
	if s.walk.vars == nil || n <= 2 {
		// The leader a round names, as make cluster printed it: step 3
		// kills it and step 4 starts the same server again.
		leader, err := f.leader(ctx)
		if err != nil || leader == "" {
			return "", "", fmt.Errorf("no leader at the start of a round of the walkthrough: %q, %v", leader, err)
		}
		s.walk.vars = walkVars(f.dir, leader)
	}
	ran, err := s.walk.step(ctx, walkSteps()[n-1])
	return "", strings.Join(ran, "; "), errors.Join(err, f.reload())
}

// killServer kills the leader, or a server that does not lead, and starts
// it again fl.hold after (after a new leader, for the leader).
func (s *soak) killServer(ctx context.Context, fl fault) (target, what string, err error) {
	f := s.f
	leader, err := f.leader(ctx)
	if err != nil || leader == "" {
		return "", "", fmt.Errorf("no leader before the fault: %q, %v", leader, err)
	}
	target = leader
	if fl.kind == serverKill {
		var others []string
		for _, srv := range f.cluster.Servers {
			if srv.Name != leader {
				others = append(others, srv.Name)
			}
		}
		target = others[fl.target%len(others)]
	}
	p, _, err := f.find(target)
	if err != nil {
		return target, "", err
	}
	killed := time.Now()
	if err := kill(p); err != nil {
		return target, "", err
	}
	what = "SIGKILL"
	if fl.kind == leaderKill {
		next, err := f.waitLeader(ctx, target, 30*time.Second)
		if err != nil {
			return target, what, err
		}
		what += fmt.Sprintf(", %s led after %v", next, time.Since(killed).Round(time.Millisecond))
	}
	ctxtime.Sleep(ctx, fl.hold)
	if _, err := f.start(ctx, target); err != nil {
		return target, what, err
	}
	return target, what + fmt.Sprintf(", started again %v after, a voter again %v after", fl.hold.Round(time.Millisecond), time.Since(killed).Round(time.Millisecond)), nil
}

// rotate rotates the token in file as operators do: a new token with the
// same policies, known to every server, written to the file (a rename,
// so that no reader sees half a file), then the old token deleted; then
// it watches for watch. A process that reads the file only once is left
// with a deleted token.
func (s *soak) rotate(ctx context.Context, file string, watch time.Duration) error {
	c, err := s.f.consulAPI()
	if err != nil {
		return err
	}
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if _, err := localconsul.RotateTokenFile(wctx, c, s.f.cluster.Servers, file); err != nil {
		return err
	}
	ctxtime.Sleep(ctx, watch)
	return nil
}

// tokenFileOf is an instance's -consul-token-file.
func tokenFileOf(p *stateProc) string {
	if i := slices.Index(p.Args, "-consul-token-file"); i >= 0 && i+1 < len(p.Args) {
		return p.Args[i+1]
	}
	return ""
}

// slowRecovery is how long the cluster may take to be whole again after a
// fault was undone before the soak says what held it up.
const slowRecovery = 15 * time.Second

// recover waits until the fleet is healthy. A member found dead, one that
// a fault ended by surprise (an instance whose token was deleted under
// it), is started again, and said so.
func (s *soak) recover(ctx context.Context) ([]string, error) {
	f := s.f
	ctx, cancel := context.WithTimeout(ctx, chaosRecover)
	defer cancel()
	var notes []string
	began := time.Now()
	var lastErr error
	for {
		qctx, qcancel := context.WithTimeout(ctx, 2*time.Second)
		err := f.healthy(qctx)
		qcancel()
		if err == nil {
			if took := time.Since(began); took > slowRecovery {
				notes = append(notes, fmt.Sprintf("whole again %v after the fault was undone; what held it up last: %v", took.Round(100*time.Millisecond), lastErr))
			}
			return notes, nil
		}
		lastErr = err
		for _, name := range f.names() {
			p, _, _ := f.find(name)
			if alive(p) {
				continue
			}
			notes = append(notes, fmt.Sprintf("%s (pid %d) had exited (%s): started again", name, p.PID, lastLine(p.Log)))
			if _, err := f.start(ctx, name); err != nil {
				return notes, err
			}
		}
		if !ctxtime.Sleep(ctx, 100*time.Millisecond) {
			return notes, fmt.Errorf("not healthy within %v: %w", chaosRecover, err)
		}
	}
}

func joinNote(what, note string) string {
	if note == "" {
		return what
	}
	return what + " (" + note + ")"
}
