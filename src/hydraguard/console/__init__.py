"""The analyst console: server-rendered pages over the admin services, served by the admin app at /console."""
