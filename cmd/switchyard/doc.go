// Command switchyard runs a Switchyard node (serve) and talks to one (send,
// listen). The commands stay thin: flags and environment become a config,
// the packages do the work, and errors become exit codes.
package main
