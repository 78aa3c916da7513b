package standalone

import (
	"log/slog"
	"path/filepath"
	"sync"
	"time"

	"github.com/fsnotify/fsnotify"
)

// Watching allowedEdgesFile. The directory is watched, not the file: a
// Kubernetes Secret volume replaces its files by pointing the ..data
// symlink at a new directory, which a watch on the file itself (its old
// inode) never sees. Every event in the directory leads, after a short
// quiet period that collapses the bursts editors and Kubernetes cause, to
// one re-read of the file; what it holds decides whether anything changes.

// settle is the quiet period after an event before the file is re-read.
const settle = 150 * time.Millisecond

// pollEvery is how often the file is re-read when the directory cannot be
// watched (no inotify instances left, a file system without events).
const pollEvery = 2 * time.Second

// watcher reports changes in the directory of one file.
type watcher struct {
	ch   chan struct{}
	stop chan struct{}
	once sync.Once
	wg   sync.WaitGroup
	fsw  *fsnotify.Watcher
}

// newWatcher watches the directory of path; "" watches nothing.
func newWatcher(path string, log *slog.Logger) *watcher {
	w := &watcher{ch: make(chan struct{}, 1), stop: make(chan struct{})}
	if path == "" {
		return w
	}
	dir := filepath.Dir(path)
	fsw, err := fsnotify.NewWatcher()
	if err == nil {
		if err = fsw.Add(dir); err != nil {
			_ = fsw.Close()
		}
	}
	if err != nil {
		log.Warn("cannot watch the directory of allowedEdgesFile; re-reading it every "+pollEvery.String()+" instead", "dir", dir, "error", err.Error())
		w.wg.Add(1)
		go w.poll()
		return w
	}
	w.fsw = fsw
	log.Info("watching allowedEdgesFile", "file", path, "dir", dir)
	w.wg.Add(1)
	go w.run(log)
	return w
}

// changed delivers one value per settled burst of changes.
func (w *watcher) changed() <-chan struct{} { return w.ch }

func (w *watcher) notify() {
	select {
	case w.ch <- struct{}{}:
	default: // one is pending already
	}
}

func (w *watcher) run(log *slog.Logger) {
	defer w.wg.Done()
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
	for {
		select {
		case <-w.stop:
			return
		case _, ok := <-w.fsw.Events:
			if !ok {
				return
			}
			timer.Reset(settle)
		case err, ok := <-w.fsw.Errors:
			if !ok {
				return
			}
			log.Warn("watching allowedEdgesFile", "error", err.Error())
			timer.Reset(settle) // events may have been lost: look again
		case <-timer.C:
			w.notify()
		}
	}
}

func (w *watcher) poll() {
	defer w.wg.Done()
	t := time.NewTicker(pollEvery)
	defer t.Stop()
	for {
		select {
		case <-w.stop:
			return
		case <-t.C:
			w.notify()
		}
	}
}

// close stops watching; it may be called more than once.
func (w *watcher) close() {
	w.once.Do(func() {
		close(w.stop)
		if w.fsw != nil {
			_ = w.fsw.Close()
		}
		w.wg.Wait()
	})
}
