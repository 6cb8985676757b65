package wasm

import (
	"container/list"
	"context"
	"sync"

	"github.com/tetratelabs/wazero"
)

// cache holds compiled modules by the SHA-256 of their bytes, least
// recently used first out. Compiling a Go program of a few MB takes
// hundreds of milliseconds; instantiating a compiled one takes about a
// millisecond, so every run of a popular algorithm after the first is
// that much faster.
//
// Concurrent runs of a module not yet compiled wait for one compilation.
// An evicted module is closed once the last run using it has released it:
// wazero cannot instantiate a closed CompiledModule, though it lets
// instances already made run on.
type cache struct {
	max int

	mu      sync.Mutex
	entries map[string]*list.Element // of *cacheEntry
	lru     *list.List               // front is most recently used
}

type cacheEntry struct {
	key   string
	ready chan struct{} // closed when mod or err is set
	mod   wazero.CompiledModule
	err   error

	refs    int  // runs holding mod; guarded by cache.mu
	evicted bool // out of the cache; close mod when refs drops to 0
}

func newCache(max int) *cache {
	return &cache{max: max, entries: map[string]*list.Element{}, lru: list.New()}
}

// acquire returns the module cached under key, compiling it with compile
// when absent, and a release func the caller must call when its run is
// over. hit reports whether this call found the module compiled or being
// compiled. Errors from compile are returned and not cached: a file that
// failed once is read again next time.
func (c *cache) acquire(ctx context.Context, key string, compile func() (wazero.CompiledModule, error)) (mod wazero.CompiledModule, release func(), hit bool, err error) {
	c.mu.Lock()
	el, hit := c.entries[key]
	if hit {
		c.lru.MoveToFront(el)
	} else {
		el = c.lru.PushFront(&cacheEntry{key: key, ready: make(chan struct{})})
		c.entries[key] = el
	}
	e := el.Value.(*cacheEntry)
	e.refs++
	c.mu.Unlock()
	release = func() { c.release(e) }

	if !hit {
		e.mod, e.err = compile()
		close(e.ready)
		c.mu.Lock()
		if e.err != nil {
			c.remove(e)
		}
		c.evict()
		c.mu.Unlock()
	}
	select {
	case <-e.ready:
	case <-ctx.Done():
		release()
		return nil, nil, hit, ctx.Err()
	}
	if e.err != nil {
		release()
		return nil, nil, hit, e.err
	}
	return e.mod, release, hit, nil
}

func (c *cache) release(e *cacheEntry) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e.refs--
	c.closeIfUnused(e)
}

// evict removes compiled entries from the back until the cache is within
// its bound. Entries still compiling stay: they have waiters.
func (c *cache) evict() {
	for el := c.lru.Back(); el != nil && c.lru.Len() > c.max; {
		prev := el.Prev()
		e := el.Value.(*cacheEntry)
		select {
		case <-e.ready:
			c.remove(e)
			c.closeIfUnused(e)
		default:
		}
		el = prev
	}
}

func (c *cache) remove(e *cacheEntry) {
	if el, ok := c.entries[e.key]; ok && el.Value == e {
		c.lru.Remove(el)
		delete(c.entries, e.key)
	}
	e.evicted = true
}

func (c *cache) closeIfUnused(e *cacheEntry) {
	if e.evicted && e.refs == 0 && e.mod != nil {
		// Close only drops the compiled code; it cannot fail.
		_ = e.mod.Close(context.Background())
		e.mod = nil
	}
}
