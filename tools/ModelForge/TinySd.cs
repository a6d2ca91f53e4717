using System.Text.Json;
using OnnxAlign.Sampling;

namespace OnnxAlign.ModelForge;

/// <summary>
/// <c>models/toy/tiny-sd</c>: a Stable Diffusion 1.5 Optimum ONNX export in miniature (DESIGN §9): the same folders,
/// file names, input and output names, dtypes and shapes (int32 <c>input_ids</c> [batch, 77] → <c>last_hidden_state</c>
/// [batch, 77, D]; UNet <c>sample</c> [batch, 4, 8, 8], int64 <c>timestep</c> [steps], <c>encoder_hidden_states</c>
/// [batch, sequence, D] → <c>out_sample</c>; VAE <c>latent_sample</c> → <c>sample</c> [batch, 3, 64, 64]), SD 1.5's
/// scheduler config and a CLIP-format tokenizer, with tiny fixed pseudo-random weights. For every path through a
/// conditional latent pipeline; not for image quality.
/// </summary>
public static class TinySd
{
    /// <summary>Width D of the hidden states.</summary>
    public const int Width = 32;

    /// <summary>Sequence length (CLIP's).</summary>
    public const int Length = 77;

    /// <summary>Words the toy vocabulary merges into single tokens; anything else falls back to byte tokens, as in CLIP.</summary>
    public static readonly string[] Words =
        ["photo", "of", "red", "green", "blue", "square", "circle", "blurry", "painting", "the", "an", "cat", "dog", "bright", "dark", "ugly"];

    /// <summary>SD 1.5's scheduler config (PNDM class, scaled-linear betas, steps offset 1).</summary>
    public const string SchedulerConfig = """
        {
          "_class_name": "PNDMScheduler",
          "_diffusers_version": "0.30.0",
          "beta_end": 0.012,
          "beta_schedule": "scaled_linear",
          "beta_start": 0.00085,
          "clip_sample": false,
          "num_train_timesteps": 1000,
          "set_alpha_to_one": false,
          "skip_prk_steps": true,
          "steps_offset": 1,
          "trained_betas": null
        }
        """;

    /// <summary>The files of the folder, relative path → bytes.</summary>
    public static IEnumerable<(string Path, byte[] Bytes)> Files()
    {
        var (vocab, merges) = Vocabulary();
        yield return ("model_index.json", Text("""
            {
              "_class_name": "OnnxStableDiffusionPipeline",
              "_diffusers_version": "0.30.0",
              "feature_extractor": [null, null],
              "requires_safety_checker": false,
              "safety_checker": [null, null],
              "scheduler": ["diffusers", "PNDMScheduler"],
              "text_encoder": ["diffusers", "OnnxRuntimeModel"],
              "tokenizer": ["transformers", "CLIPTokenizer"],
              "unet": ["diffusers", "OnnxRuntimeModel"],
              "vae_decoder": ["diffusers", "OnnxRuntimeModel"]
            }
            """));
        yield return ("scheduler/scheduler_config.json", Text(SchedulerConfig));
        yield return ("tokenizer/vocab.json", Text(JsonSerializer.Serialize(vocab)));
        yield return ("tokenizer/merges.txt", Text("#version: 0.2\n" + string.Join("\n", merges)));
        yield return ("tokenizer/special_tokens_map.json", Text("""
            { "bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>", "pad_token": "<|endoftext|>", "unk_token": "<|endoftext|>" }
            """));
        yield return ("tokenizer/tokenizer_config.json", Text("""
            { "tokenizer_class": "CLIPTokenizer", "model_max_length": 77, "do_lower_case": true, "bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>", "pad_token": "<|endoftext|>", "unk_token": "<|endoftext|>" }
            """));
        yield return ("text_encoder/model.onnx", TextEncoder(vocab.Count));
        yield return ("unet/model.onnx", Unet());
        yield return ("vae_decoder/model.onnx", VaeDecoder());
        yield return ("vae_decoder/config.json", Text("""
            { "_class_name": "AutoencoderKL", "_diffusers_version": "0.30.0", "in_channels": 3, "out_channels": 3, "latent_channels": 4, "sample_size": 64, "scaling_factor": 0.18215 }
            """));
    }

    /// <summary>
    /// A CLIP-format vocabulary as CLIP builds its own: the 256 byte symbols, the same with &lt;/w&gt;, one token per
    /// merge, then &lt;|startoftext|&gt; and &lt;|endoftext|&gt;. The merges spell <see cref="Words"/> left to right.
    /// </summary>
    public static (Dictionary<string, int> Vocabulary, List<string> Merges) Vocabulary()
    {
        var bs = Enumerable.Range('!', '~' - '!' + 1).Concat(Enumerable.Range('¡', '¬' - '¡' + 1)).Concat(Enumerable.Range('®', 'ÿ' - '®' + 1)).ToList();
        var cs = bs.ToList();
        int extra = 0;
        for (int b = 0; b < 256; b++)
            if (!bs.Contains(b)) { bs.Add(b); cs.Add(256 + extra++); }
        var symbols = cs.Select(c => ((char)c).ToString()).ToList();
        var tokens = symbols.Concat(symbols.Select(s => s + "</w>")).ToList();
        var merges = new List<string>();
        foreach (string word in Words)
        {
            string left = word[0].ToString();
            for (int i = 1; i < word.Length; i++)
            {
                string right = i == word.Length - 1 ? word[i] + "</w>" : word[i].ToString();
                string merge = $"{left} {right}";
                if (!merges.Contains(merge)) { merges.Add(merge); tokens.Add(left + right); }
                left += right;
            }
        }
        tokens.Add("<|startoftext|>");
        tokens.Add("<|endoftext|>");
        var vocabulary = new Dictionary<string, int>();
        for (int i = 0; i < tokens.Count; i++) vocabulary.TryAdd(tokens[i], i);
        return (vocabulary, merges);
    }

    /// <summary>input_ids int32 [batch, 77] → token + position embedding → tanh(·W + b): last_hidden_state [batch, 77, D]; pooler_output = its mean.</summary>
    public static byte[] TextEncoder(int vocabularySize)
    {
        var rng = new NoiseStream(20261202, 1);
        var g = new OnnxGraph("tiny_clip_text");
        string ids = g.Input("input_ids", OnnxType.Int32, -1, Length);
        g.Output("last_hidden_state", OnnxType.Float, -1, Length, Width);
        g.Output("pooler_output", OnnxType.Float, -1, Width);
        string index = g.Node("Cast", [ids], n => OnnxGraph.IntAttribute(n, "to", (long)OnnxType.Int64));
        string tokens = g.Node("Gather", [Weights(g, rng, vocabularySize * Width, 1.0, vocabularySize, Width), index]);   // [B,77,D]
        string positions = Weights(g, rng, Length * Width, 0.3, 1, Length, Width);
        string h = g.Node("Add", [tokens, positions]);
        string mixed = g.Node("Tanh", [g.Node("Add", [g.Node("MatMul", [h, Weights(g, rng, Width * Width, Math.Sqrt(1.0 / Width), Width, Width)]), Weights(g, rng, Width, 0.1, Width)])]);
        g.Node("Identity", [mixed], output: "last_hidden_state");
        g.Node("ReduceMean", [mixed], n => { OnnxGraph.IntsAttribute(n, "axes", 1); OnnxGraph.IntAttribute(n, "keepdims", 0); }, output: "pooler_output");
        return g.ToModel();
    }

    /// <summary>
    /// sample [batch, 4, 8, 8], timestep int64 [steps] (1 or batch), encoder_hidden_states [batch, sequence, D] → out_sample:
    /// conv + timestep embedding → SiLU → cross-attention to the hidden states (single head, residual) → conv → SiLU → conv.
    /// </summary>
    public static byte[] Unet() => UnetGraph(half: false).ToModel();

    /// <summary>The UNet as a half-precision export (<c>--dtype fp16</c>): float16 sample, hidden states and output, float32 inside.</summary>
    public static byte[] HalfPrecisionUnet() => UnetGraph(half: true).ToModel();

    /// <summary>The same UNet as an exporter writes a large one: <c>model.onnx</c> with its weights in <c>model.onnx_data</c>.</summary>
    public static (byte[] Model, byte[] Data) UnetWithExternalData()
    {
        var model = UnetGraph(half: false).ToModel("model.onnx_data", out var data);
        return (model, data);
    }

    private static OnnxGraph UnetGraph(bool half)
    {
        const int channels = 16, key = 16;
        var rng = new NoiseStream(20261202, 2);
        var g = new OnnxGraph("tiny_unet_condition");
        var io = half ? OnnxType.Float16 : OnnxType.Float;
        string sample = ToFloat(g, g.Input("sample", io, -1, 4, 8, 8), half);
        string timestep = g.Input("timestep", OnnxType.Int64, -3);
        string context = ToFloat(g, g.Input("encoder_hidden_states", io, -1, -2, Width), half);
        g.Output("out_sample", io, -1, 4, 8, 8);

        const int embed = 16;
        string emb = g.Node("Gather", [g.Constant(ToyModels.SinusoidTable(embed), 1000, embed), timestep]);                                   // [steps,16]
        string temb = g.Node("Reshape", [g.Node("MatMul", [emb, Weights(g, rng, embed * channels, Math.Sqrt(1.0 / embed), embed, channels)]),
                                         g.Constant([-1L, channels, 1, 1], 4)]);                                        // [steps,C,1,1]
        string h = Silu(g, g.Node("Add", [Conv(g, rng, sample, 4, channels), temb]));                                  // [B,C,8,8]

        // Cross-attention: queries from the 64 positions, keys and values from the hidden states.
        string q = g.Node("MatMul", [g.Node("Transpose", [g.Node("Reshape", [h, g.Constant([0L, channels, -1], 3)])], n => OnnxGraph.IntsAttribute(n, "perm", 0, 2, 1)),
                                     Weights(g, rng, channels * key, Math.Sqrt(1.0 / channels), channels, key)]);       // [B,64,k]
        string k = g.Node("MatMul", [context, Weights(g, rng, Width * key, Math.Sqrt(1.0 / Width), Width, key)]);      // [B,L,k]
        string v = g.Node("MatMul", [context, Weights(g, rng, Width * channels, Math.Sqrt(2.0 / Width), Width, channels)]); // [B,L,C]
        string scores = g.Node("Mul", [g.Node("MatMul", [q, g.Node("Transpose", [k], n => OnnxGraph.IntsAttribute(n, "perm", 0, 2, 1))]), g.Scalar((float)(1 / Math.Sqrt(key)))]);
        string attention = g.Node("Softmax", [scores], n => OnnxGraph.IntAttribute(n, "axis", -1));                     // [B,64,L]
        string attended = g.Node("Reshape", [g.Node("Transpose", [g.Node("MatMul", [attention, v])], n => OnnxGraph.IntsAttribute(n, "perm", 0, 2, 1)),
                                             g.Constant([0L, channels, 8, 8], 4)]);                                     // [B,C,8,8]
        string h2 = Silu(g, Conv(g, rng, g.Node("Add", [h, attended]), channels, channels));
        string output = Conv(g, rng, h2, channels, 4, gain: 0.3);
        if (half) g.Node("Cast", [output], n => OnnxGraph.IntAttribute(n, "to", (long)OnnxType.Float16), output: "out_sample");
        else g.Node("Identity", [output], output: "out_sample");
        return g;
    }

    /// <summary>latent_sample [batch, 4, 8, 8] → three (conv, SiLU, ×2 nearest) stages → conv → tanh: sample [batch, 3, 64, 64] in (−1, 1).</summary>
    public static byte[] VaeDecoder() => VaeDecoder(half: false);

    /// <summary>The VAE decoder as a half-precision export: float16 latents in, float16 images out.</summary>
    public static byte[] VaeDecoder(bool half)
    {
        var io = half ? OnnxType.Float16 : OnnxType.Float;
        var rng = new NoiseStream(20261202, 3);
        var g = new OnnxGraph("tiny_vae_decoder");
        string latent = ToFloat(g, g.Input("latent_sample", io, -1, 4, 8, 8), half);
        g.Output("sample", io, -1, 3, 64, 64);
        string h = latent;
        int cin = 4;
        for (int stage = 0; stage < 3; stage++)
        {
            h = Silu(g, Conv(g, rng, h, cin, 16));
            h = g.Node("Resize", [h, "", g.Constant([1f, 1f, 2f, 2f], 4)], n => OnnxGraph.StringAttribute(n, "mode", "nearest"));
            cin = 16;
        }
        string last = Conv(g, rng, h, 16, 3);
        if (half) g.Node("Cast", [g.Node("Tanh", [last])], n => OnnxGraph.IntAttribute(n, "to", (long)OnnxType.Float16), output: "sample");
        else g.Node("Tanh", [last], output: "sample");
        return g.ToModel();
    }

    private static string Weights(OnnxGraph g, NoiseStream rng, int count, double scale, params long[] dims)
    {
        var w = new float[count];
        for (int i = 0; i < count; i++) w[i] = (float)(rng.NextGaussian() * scale);
        return g.Constant(w, dims);
    }

    private static string Conv(OnnxGraph g, NoiseStream rng, string input, int cin, int cout, double gain = 1.0) =>
        g.Node("Conv", [input, Weights(g, rng, cout * cin * 9, gain * Math.Sqrt(2.0 / (cin * 9)), cout, cin, 3, 3), Weights(g, rng, cout, 0.01, cout)], n =>
        {
            OnnxGraph.IntsAttribute(n, "kernel_shape", 3, 3);
            OnnxGraph.IntsAttribute(n, "pads", 1, 1, 1, 1);
        });

    private static string ToFloat(OnnxGraph g, string input, bool half) =>
        half ? g.Node("Cast", [input], n => OnnxGraph.IntAttribute(n, "to", (long)OnnxType.Float)) : input;

    private static string Silu(OnnxGraph g, string h) => g.Node("Mul", [h, g.Node("Sigmoid", [h])]);

    private static byte[] Text(string s) => System.Text.Encoding.UTF8.GetBytes(s.ReplaceLineEndings("\n").Trim() + "\n");
}
