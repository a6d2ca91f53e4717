using OnnxAlign.Evaluation;
using OnnxAlign.Model;
using OnnxAlign.Sampling;

namespace OnnxAlign.ModelForge;

/// <summary>How a Gaussian-mixture toy network is exported (the conventions the loader must handle).</summary>
public sealed record GmmExport
{
    /// <summary>Per-sample shape: [d] or [1, h, w].</summary>
    public required int[] SampleShape { get; init; }
    /// <summary>Timestep dtype: Int64, Int32, Float or Float16.</summary>
    public OnnxType TimestepType { get; init; } = OnnxType.Int64;
    /// <summary>Timestep as a scalar (rank 0) instead of a [batch] vector.</summary>
    public bool ScalarTimestep { get; init; }
    /// <summary>What the network outputs.</summary>
    public PredictionType Prediction { get; init; } = PredictionType.Epsilon;
    /// <summary>A fixed batch dimension, or null for dynamic.</summary>
    public int? FixedBatch { get; init; }
    /// <summary>Sample and output in float16 (a half-precision export), computed in float32 inside.</summary>
    public bool HalfPrecisionIo { get; init; }
    /// <summary>
    /// Adds a conditional network's <c>encoder_hidden_states</c> input [batch, 4, 8] whose mean is added to the output:
    /// unconditional use (zeros) leaves the network unchanged, anything else shows.
    /// </summary>
    public bool Conditioning { get; init; }
}

/// <summary>The toy models of <c>models/toy</c>: exact Gaussian-mixture score networks and a small random UNet.</summary>
public static class ToyModels
{
    /// <summary>The 2-D mixture of <c>gmm2d</c>: three components of unequal weight and width.</summary>
    public static GaussianMixture Gmm2d { get; } = new()
    {
        Weights = [0.5, 0.3, 0.2],
        Means = [[-2.0, 0.0], [2.0, 1.0], [0.5, -2.5]],
        Stds = [0.5, 0.4, 0.3],
    };

    /// <summary>The 8×8 "image" mixture of <c>gmm-image</c>: a bright square, vertical stripes, a diagonal ramp.</summary>
    public static GaussianMixture GmmImage { get; } = new()
    {
        Weights = [0.6, 0.3, 0.1],
        Means =
        [
            Pattern((y, x) => x is >= 2 and <= 5 && y is >= 2 and <= 5 ? 0.6 : -0.6),
            Pattern((y, x) => x % 2 == 0 ? 0.5 : -0.5),
            Pattern((y, x) => -0.8 + 1.6 * (x + y) / 14.0),
        ],
        Stds = [0.3, 0.25, 0.2],
    };

    /// <summary>The DDPM-style config of gmm2d (legacy root layout; ε-prediction, int64 [batch] timestep).</summary>
    public const string Gmm2dConfig = """
        {
          "_class_name": "DDPMScheduler",
          "_diffusers_version": "0.30.0",
          "num_train_timesteps": 1000,
          "beta_start": 0.0001,
          "beta_end": 0.02,
          "beta_schedule": "linear",
          "prediction_type": "epsilon",
          "variance_type": "fixed_small",
          "clip_sample": false,
          "timestep_spacing": "leading",
          "steps_offset": 0
        }
        """;

    /// <summary>The DDIM config of gmm-image (diffusers layout; v-prediction, float scalar timestep).</summary>
    public const string GmmImageConfig = """
        {
          "_class_name": "DDIMScheduler",
          "_diffusers_version": "0.30.0",
          "num_train_timesteps": 1000,
          "beta_start": 0.0001,
          "beta_end": 0.02,
          "beta_schedule": "linear",
          "prediction_type": "v_prediction",
          "clip_sample": false,
          "set_alpha_to_one": true,
          "timestep_spacing": "leading",
          "steps_offset": 0
        }
        """;

    /// <summary>The config of tiny-unet (diffusers' DDPM defaults).</summary>
    public const string TinyUnetConfig = """
        {
          "_class_name": "DDPMScheduler",
          "_diffusers_version": "0.30.0",
          "num_train_timesteps": 1000,
          "beta_schedule": "linear"
        }
        """;

    /// <summary>Writes gmm2d, gmm-image, tiny-unet and tiny-sd under <paramref name="root"/>; returns the files written.</summary>
    public static IReadOnlyList<string> WriteAll(string root)
    {
        var files = new List<string>();
        void Put(string relative, byte[] bytes)
        {
            string path = Path.Combine(root, relative);
            Directory.CreateDirectory(Path.GetDirectoryName(path)!);
            File.WriteAllBytes(path, bytes);
            files.Add(path);
        }
        static byte[] Text(string s) => System.Text.Encoding.UTF8.GetBytes(s.ReplaceLineEndings("\n") + "\n");

        Put("gmm2d/model.onnx", GmmNetwork(Gmm2d, Gmm2dConfig, new GmmExport { SampleShape = [2] }));
        Put("gmm2d/scheduler_config.json", Text(Gmm2dConfig));
        Put("gmm2d/mixture.json", Text(Gmm2d.ToJson()));

        Put("gmm-image/unet/model.onnx", GmmNetwork(GmmImage, GmmImageConfig, new GmmExport
        {
            SampleShape = [1, 8, 8], TimestepType = OnnxType.Float, ScalarTimestep = true, Prediction = PredictionType.VPrediction,
        }));
        Put("gmm-image/scheduler/scheduler_config.json", Text(GmmImageConfig));
        Put("gmm-image/model_index.json", Text("""{ "_class_name": "DDPMPipeline", "_diffusers_version": "0.30.0", "scheduler": ["diffusers", "DDIMScheduler"], "unet": ["diffusers", "UNet2DModel"] }"""));
        Put("gmm-image/mixture.json", Text(GmmImage.ToJson()));

        Put("tiny-unet/model.onnx", TinyUnet());
        Put("tiny-unet/scheduler_config.json", Text(TinyUnetConfig));

        foreach (var (relative, bytes) in TinySd.Files()) Put(Path.Combine("tiny-sd", relative), bytes);
        return files;
    }

    /// <summary>
    /// The exact network of a mixture under a schedule (DESIGN §0): p_t = Σ π_k N(α μ_k, v_k I), v_k = α² s_k² + σ²,
    /// s_t(x) = Σ_k w_k(x)(α μ_k − x)/v_k with w = softmax_k(log π_k − (d/2) log v_k − |x − α μ_k|²/(2 v_k));
    /// output ε̂ = −σ·s, v = −(σ/α)(s + x) or x̂0 = (x + σ² s)/α. α_t, σ_t come from tables indexed by the timestep.
    /// </summary>
    public static byte[] GmmNetwork(GaussianMixture mixture, string configJson, GmmExport export)
    {
        var schedule = new NoiseSchedule(SchedulerConfig.Parse(configJson, "toy config"));
        int d = mixture.Dimension, k = mixture.Components;
        if (export.SampleShape.Aggregate(1, (a, b) => a * b) != d) throw new ArgumentException("sample shape does not match the mixture's dimension");
        var g = new OnnxGraph("gmm_score");
        long batch = export.FixedBatch ?? -1;
        long[] sampleDims = [batch, .. export.SampleShape.Select(s => (long)s)];
        var ioType = export.HalfPrecisionIo ? OnnxType.Float16 : OnnxType.Float;
        string sample = g.Input("sample", ioType, sampleDims);
        string timestep = export.ScalarTimestep ? g.Input("timestep", export.TimestepType) : g.Input("timestep", export.TimestepType, batch);
        string? conditioning = export.Conditioning ? g.Input("encoder_hidden_states", OnnxType.Float, batch, 4, 8) : null;

        string sample32 = export.HalfPrecisionIo ? g.Node("Cast", [sample], n => OnnxGraph.IntAttribute(n, "to", (long)OnnxType.Float)) : sample;
        string x = export.SampleShape.Length == 1 ? sample32 : g.Node("Reshape", [sample32, g.Constant([-1L, d], 2)]);
        string index = export.TimestepType == OnnxType.Int64 ? timestep : g.Node("Cast", [timestep], n => OnnxGraph.IntAttribute(n, "to", (long)OnnxType.Int64));
        var table = schedule.AlphasCumprod;
        string alphaTable = g.Constant(table.Select(a => (float)Math.Sqrt(a)).ToArray(), table.Count);
        string sigmaTable = g.Constant(table.Select(a => (float)Math.Sqrt(1 - a)).ToArray(), table.Count);
        string column = g.Constant([-1L, 1], 2);
        string alpha = g.Node("Reshape", [g.Node("Gather", [alphaTable, index]), column]);   // [B,1] or [1,1]
        string sigma = g.Node("Reshape", [g.Node("Gather", [sigmaTable, index]), column]);
        string alpha2 = g.Node("Mul", [alpha, alpha]);
        string sigma2 = g.Node("Mul", [sigma, sigma]);

        var means = mixture.Means.SelectMany(m => m.Select(v => (float)v)).ToArray();
        var meansT = new float[d * k];
        for (int c = 0; c < k; c++) for (int i = 0; i < d; i++) meansT[i * k + c] = (float)mixture.Means[c][i];
        string meanMatrix = g.Constant(means, k, d);
        string meanMatrixT = g.Constant(meansT, d, k);
        string meanNorms = g.Constant(mixture.Means.Select(m => (float)m.Sum(v => v * v)).ToArray(), 1, k);
        string logWeights = g.Constant(mixture.Weights.Select(w => (float)Math.Log(w)).ToArray(), 1, k);
        string variances0 = g.Constant(mixture.Stds.Select(s => (float)(s * s)).ToArray(), 1, k);
        string axis1 = g.Constant([1L], 1);
        string two = g.Scalar(2f);

        string v = g.Node("Add", [g.Node("Mul", [alpha2, variances0]), sigma2]);                          // [B,K]
        string xx = g.Node("ReduceSum", [g.Node("Mul", [x, x]), axis1], n => OnnxGraph.IntAttribute(n, "keepdims", 1));
        string xm = g.Node("MatMul", [x, meanMatrixT]);                                                   // [B,K]
        string dist = g.Node("Sub", [g.Node("Add", [xx, g.Node("Mul", [alpha2, meanNorms])]), g.Node("Mul", [g.Node("Mul", [alpha, two]), xm])]);
        string logits = g.Node("Sub", [
            g.Node("Sub", [logWeights, g.Node("Mul", [g.Scalar(d / 2f), g.Node("Log", [v])])]),
            g.Node("Div", [dist, g.Node("Mul", [two, v])])]);
        string w = g.Node("Softmax", [logits], n => OnnxGraph.IntAttribute(n, "axis", 1));
        string wv = g.Node("Div", [w, v]);
        string score = g.Node("Sub", [
            g.Node("Mul", [alpha, g.Node("MatMul", [wv, meanMatrix])]),
            g.Node("Mul", [x, g.Node("ReduceSum", [wv, axis1], n => OnnxGraph.IntAttribute(n, "keepdims", 1))])]);
        string output = export.Prediction switch
        {
            PredictionType.Epsilon => g.Node("Neg", [g.Node("Mul", [sigma, score])]),
            PredictionType.VPrediction => g.Node("Neg", [g.Node("Mul", [g.Node("Div", [sigma, alpha]), g.Node("Add", [score, x])])]),
            _ => g.Node("Div", [g.Node("Add", [x, g.Node("Mul", [sigma2, score])]), alpha]),
        };
        if (conditioning is not null)
        {
            string mean = g.Node("ReduceMean", [conditioning], n => { OnnxGraph.IntsAttribute(n, "axes", 1, 2); OnnxGraph.IntAttribute(n, "keepdims", 0); });
            output = g.Node("Add", [output, g.Node("Reshape", [mean, column])]);                          // [B,d] + [B,1]
        }
        if (export.HalfPrecisionIo)
            output = g.Node("Cast", [output], n => OnnxGraph.IntAttribute(n, "to", (long)OnnxType.Float16));
        g.Node("Reshape", [output, g.Node("Shape", [sample])], output: "out_sample");
        g.Output("out_sample", ioType, sampleDims);
        return g.ToModel();
    }

    /// <summary>
    /// A small convolutional UNet (3×32×32, float [batch] timestep) with fixed pseudo-random weights: conv → SiLU with a
    /// sinusoidal timestep embedding, a stride-2 level, nearest upsampling with a skip connection, conv out.
    /// For shape, batching and speed work, not for quality.
    /// </summary>
    public static byte[] TinyUnet()
    {
        var rng = new NoiseStream(20260101, 0);
        var g = new OnnxGraph("tiny_unet");
        string sample = g.Input("sample", OnnxType.Float, -1, 3, 32, 32);
        string timestep = g.Input("timestep", OnnxType.Float, -1);
        g.Output("out_sample", OnnxType.Float, -1, 3, 32, 32);

        string Weights(int count, double scale, params long[] dims)
        {
            var w = new float[count];
            for (int i = 0; i < count; i++) w[i] = (float)(rng.NextGaussian() * scale);
            return g.Constant(w, dims);
        }
        string Conv(string input, int cin, int cout, int stride = 1, double gain = 1.0)
        {
            double scale = gain * Math.Sqrt(2.0 / (cin * 9));
            return g.Node("Conv", [input, Weights(cout * cin * 9, scale, cout, cin, 3, 3), Weights(cout, 0.01, cout)], n =>
            {
                OnnxGraph.IntsAttribute(n, "kernel_shape", 3, 3);
                OnnxGraph.IntsAttribute(n, "pads", 1, 1, 1, 1);
                OnnxGraph.IntsAttribute(n, "strides", stride, stride);
            });
        }
        string Silu(string h) => g.Node("Mul", [h, g.Node("Sigmoid", [h])]);

        const int embed = 32;
        var table = SinusoidTable(embed);
        string index = g.Node("Cast", [timestep], n => OnnxGraph.IntAttribute(n, "to", (long)OnnxType.Int64));
        string emb = g.Node("Gather", [g.Constant(table, 1000, embed), index]);
        string temb = g.Node("Reshape", [
            g.Node("Add", [g.Node("MatMul", [emb, Weights(embed * 16, Math.Sqrt(1.0 / embed), embed, 16)]), Weights(16, 0.01, 16)]),
            g.Constant([-1L, 16, 1, 1], 4)]);

        string h1 = Silu(g.Node("Add", [Conv(sample, 3, 16), temb]));          // [B,16,32,32]
        string h2 = Silu(Conv(h1, 16, 32, stride: 2));                           // [B,32,16,16]
        string h3 = Silu(Conv(h2, 32, 32));
        string up = g.Node("Resize", [h3, "", g.Constant([1f, 1f, 2f, 2f], 4)], n => OnnxGraph.StringAttribute(n, "mode", "nearest"));
        string h4 = Silu(g.Node("Add", [Conv(up, 32, 16), h1]));
        g.Node("Identity", [Conv(h4, 16, 3, gain: 0.2)], output: "out_sample");
        return g.ToModel();
    }

    /// <summary>The sinusoidal timestep embedding of t = 0 … 999 (sines, then cosines), [1000 × <paramref name="embed"/>].</summary>
    internal static float[] SinusoidTable(int embed)
    {
        var table = new float[1000 * embed];
        for (int t = 0; t < 1000; t++)
            for (int j = 0; j < embed / 2; j++)
            {
                double freq = Math.Exp(-Math.Log(10000) * j / (embed / 2));
                table[t * embed + j] = (float)Math.Sin(t * freq);
                table[t * embed + embed / 2 + j] = (float)Math.Cos(t * freq);
            }
        return table;
    }

    private static double[] Pattern(Func<int, int, double> pixel)
    {
        var p = new double[64];
        for (int y = 0; y < 8; y++) for (int x = 0; x < 8; x++) p[y * 8 + x] = pixel(y, x);
        return p;
    }
}
