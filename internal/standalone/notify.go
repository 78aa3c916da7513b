package standalone

// Notifier hears of the lifecycle of a standalone hub or edge, for a
// service manager: this is where systemd's sd_notify (READY=1, RELOADING=1,
// STOPPING=1) is to be called. Every method is called from the run loop and
// must return quickly.
type Notifier interface {
	// Ready: the hub listens on its tunnel port with its allowed list
	// loaded, or the edge has bound every listen port. Called once at start
	// and again after each reload (SIGHUP), whether or not it applied.
	Ready()
	// Reloading: a reload (SIGHUP) begins.
	Reloading()
	// Stopping: SIGTERM or SIGINT arrived; the drain begins.
	Stopping()
}

// nopNotifier is the Notifier of Options without one.
type nopNotifier struct{}

func (nopNotifier) Ready()     {}
func (nopNotifier) Reloading() {}
func (nopNotifier) Stopping()  {}
