package sd_test

import (
	"net"
	"testing"

	"github.com/trimkit/trimkit/sd"
)

func TestRegistrationAt(t *testing.T) {
	reg, err := sd.Registration{Name: "orders"}.At(&net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 4321})
	if err != nil {
		t.Fatal(err)
	}
	if reg.Address != "127.0.0.1" || reg.Port != 4321 || reg.ID != "orders-127.0.0.1-4321" || reg.CheckInterval != sd.DefaultCheckInterval {
		t.Errorf("have %+v", reg)
	}
	if _, err := (sd.Registration{Name: "orders"}).At(nil); err == nil {
		t.Error("At(nil): want an error")
	}
}
