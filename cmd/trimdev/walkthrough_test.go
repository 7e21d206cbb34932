package main

import (
	"os"
	"strings"
	"testing"
)

// The walkthrough in docs/cluster.md is the one make cluster prints and
// make walkthrough runs: the same list, written out for a cluster in .run
// whose leader is server-1.
func TestWalkthroughDocsMatchTheSteps(t *testing.T) {
	var b strings.Builder
	printWalkthrough(&b, ".run", "server-1")
	want := b.String()
	doc, err := os.ReadFile("../../docs/cluster.md")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(doc), "```sh\n"+want+"```\n") {
		t.Errorf("docs/cluster.md does not show the walkthrough as make cluster prints it; put this in its own sh block:\n%s", want)
	}
}

// Every step of the walkthrough has a command, says what it shows, and
// the load comes first, alone in its step.
func TestWalkthroughSteps(t *testing.T) {
	steps := walkSteps()
	if len(steps) == 0 || len(steps[0].cmds) != 1 || !steps[0].cmds[0].load {
		t.Fatalf("the first step must be the load alone: %+v", steps[0])
	}
	for i, s := range steps {
		if len(s.say) == 0 || len(s.cmds) == 0 {
			t.Errorf("step %d: says %q, runs %d commands", i+1, s.say, len(s.cmds))
		}
		for _, c := range s.cmds {
			if c.load && i > 0 {
				t.Errorf("step %d: a second load: %q", i+1, c.line)
			}
			if line := walkVars(".run", "server-1").Replace(c.line); strings.Contains(line, "{{") {
				t.Errorf("step %d: %q is left unfilled", i+1, line)
			}
		}
	}
}

func TestWalkFaultsRunEveryStepButTheLoad(t *testing.T) {
	next := walkFaults()
	n := len(walkSteps()) - 1
	for round := range 2 {
		for i := range n {
			f := next()
			if f.step != i+2 {
				t.Errorf("round %d, fault %d: step %d, want %d", round, i, f.step, i+2)
			}
			if last := i == n-1; f.noRecover == last {
				t.Errorf("round %d, step %d: noRecover %t; only a round's last step waits for recovery", round, f.step, f.noRecover)
			}
		}
	}
}
