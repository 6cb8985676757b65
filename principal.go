package cove

// Principal is the authenticated caller of a service method: a user acting
// through a login session or a personal access token. Services take it
// explicitly; it is never read from a global.
type Principal struct {
	UserID    string
	Email     string
	Admin     bool   // platform admin
	SessionID string // set when authenticated by an access token
	TokenID   string // set when authenticated by a personal access token
}

// Subject returns the principal as an authorization subject, "user:<id>".
func (p Principal) Subject() string { return "user:" + p.UserID }
