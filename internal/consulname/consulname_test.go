package consulname

import "testing"

func TestValidNodeName(t *testing.T) {
	for _, name := range []string{NearAgent, "node-1", "ip-10-0-0-1.ec2.internal", "rack_2:a"} {
		if err := ValidNodeName(name); err != nil {
			t.Errorf("ValidNodeName(%q) = %v, want nil", name, err)
		}
	}
	for _, name := range []string{"", ".", "..", "rack/1", "a?b", "a#b", "a%20", "a&b", "a=b", `a\b`, "a b", "a\tb", "a\rb", "a\nb"} {
		if err := ValidNodeName(name); err == nil {
			t.Errorf("ValidNodeName(%q) = nil, want an error", name)
		}
	}
}
