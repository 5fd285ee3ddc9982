// Command classify sends texts to an edgetune server twice: over edgetune.v1
// (Inference/Classify) and over the standard KServe v2 protocol (ModelInfer), and prints
// both answers as one JSON object.
//
//	build/classify 127.0.0.1:50051 bbc-news "Shares rose after strong results" "The striker scored twice"
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"time"

	edgetunev1 "github.com/edgetune/edgetune/gen/go/edgetune/v1"
	"github.com/edgetune/edgetune/gen/go/inference"
	"google.golang.org/grpc"
	"google.golang.org/grpc/status"
)

type answer struct {
	Label string  `json:"label"`
	Score float32 `json:"score"`
}

type output struct {
	Ready    bool        `json:"ready"`
	Version  string      `json:"version"`
	Classify []answer    `json:"classify"`
	V2Labels []string    `json:"v2_labels"`
	V2Scores [][]float32 `json:"v2_scores"`
}

func main() {
	if len(os.Args) < 4 {
		fmt.Fprintln(os.Stderr, "usage: classify ADDRESS MODEL TEXT...")
		os.Exit(2)
	}
	address, model, texts := os.Args[1], os.Args[2], os.Args[3:]
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := grpc.DialContext(ctx, address, grpc.WithInsecure(), grpc.WithBlock())
	if err != nil {
		fail(err)
	}
	defer conn.Close()

	var out output
	v2 := inference.NewGRPCInferenceServiceClient(conn)
	ready, err := v2.ModelReady(ctx, &inference.ModelReadyRequest{Name: model})
	if err != nil {
		fail(err)
	}
	out.Ready = ready.Ready

	request := &edgetunev1.ClassifyRequest{Model: model, TopK: 1}
	for _, text := range texts {
		request.Inputs = append(request.Inputs, &edgetunev1.Input{Kind: &edgetunev1.Input_Text{Text: text}})
	}
	reply, err := edgetunev1.NewInferenceClient(conn).Classify(ctx, request)
	if err != nil {
		fail(err)
	}
	out.Version = reply.Version
	for _, result := range reply.Results {
		best := result.Labels[0]
		out.Classify = append(out.Classify, answer{best.Label, best.Score})
	}

	contents := &inference.InferTensorContents{}
	for _, text := range texts {
		contents.BytesContents = append(contents.BytesContents, []byte(text))
	}
	infer, err := v2.ModelInfer(ctx, &inference.ModelInferRequest{
		ModelName: model,
		Inputs: []*inference.ModelInferRequest_InferInputTensor{{
			Name: "text", Datatype: "BYTES", Shape: []int64{int64(len(texts))}, Contents: contents,
		}},
	})
	if err != nil {
		fail(err)
	}
	for _, tensor := range infer.Outputs {
		switch tensor.Name {
		case "labels":
			for _, label := range tensor.Contents.BytesContents {
				out.V2Labels = append(out.V2Labels, string(label))
			}
		case "scores":
			width := int(tensor.Shape[1])
			scores := tensor.Contents.Fp32Contents
			for row := 0; row*width < len(scores); row++ {
				out.V2Scores = append(out.V2Scores, scores[row*width:(row+1)*width])
			}
		}
	}
	encoded, _ := json.Marshal(out)
	fmt.Println(string(encoded))
}

// fail prints the server's status (e.g. "error: NOT_FOUND: model 'nope' not found") and exits 1.
func fail(err error) {
	if s, ok := status.FromError(err); ok {
		fmt.Fprintf(os.Stderr, "error: %s: %s\n", s.Code(), s.Message())
	} else {
		fmt.Fprintf(os.Stderr, "error: %v\n", err)
	}
	os.Exit(1)
}
