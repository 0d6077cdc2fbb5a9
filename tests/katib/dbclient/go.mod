module trialtail.test/katib/dbclient

go 1.24.0

require (
	github.com/kubeflow/katib v0.19.0
	google.golang.org/grpc v1.72.1
)

require (
	golang.org/x/net v0.41.0 // indirect
	golang.org/x/sys v0.33.0 // indirect
	golang.org/x/text v0.26.0 // indirect
	google.golang.org/genproto/googleapis/rpc v0.0.0-20250303144028-a0af3efb3deb // indirect
	google.golang.org/protobuf v1.36.6 // indirect
)
