package httpapi

// AppendLogLine is appendLogLine, for tests.
var AppendLogLine = appendLogLine
